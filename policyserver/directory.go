package policyserver

// The user directory (LDAP or a database at the vendor's site) as the
// Policy Server meets it: a response time per lookup. Logins (the bind)
// and authorizations (the user's groups) wait on it inside a worker
// thread; IsProtected reads only the policy store and does not. A slow
// directory is the usual start of the connection build-up outage
// (DOMAIN.md section 9), so the lab needs one it can slow down.

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// Defaults for a store without a directory: section: one lookup per
// Login (the bind) and per Authorize (the user's groups), answered at
// once.
const (
	DefaultLoginLookups     = 1
	DefaultAuthorizeLookups = 1
	// MaxDirectoryLatency bounds a store's latency and jitter: a worker
	// thread waits out every lookup, and a store asking for minutes is a
	// typo (5m for 5ms).
	MaxDirectoryLatency = time.Minute
	// maxLookups bounds lookups per request for the same reason.
	maxLookups = 100
)

// DirectorySpec is the store's directory: section as written; durations
// in Go's syntax (5ms, 1.5s). Nil counts take the defaults.
type DirectorySpec struct {
	Latency          string `yaml:"latency"`
	Jitter           string `yaml:"jitter"`
	LoginLookups     *int   `yaml:"lookups_per_login"`
	AuthorizeLookups *int   `yaml:"lookups_per_authorize"`
}

// Directory is the user directory's response time: each lookup takes
// Latency, give or take up to Jitter (uniformly, never below zero).
type Directory struct {
	Latency          time.Duration
	Jitter           time.Duration
	LoginLookups     int
	AuthorizeLookups int
}

// Directory is the store's user directory.
func (s *Store) Directory() Directory { return s.dir }

func (b *builder) buildDirectory(y *DirectorySpec) Directory {
	d := Directory{LoginLookups: DefaultLoginLookups, AuthorizeLookups: DefaultAuthorizeLookups}
	if y == nil {
		return d
	}
	dur := func(key, s string) time.Duration {
		if s == "" {
			return 0
		}
		v, err := time.ParseDuration(s)
		switch {
		case err != nil:
			b.errf(at("directory", -1, key), "directory %s %q: want a duration such as 5ms", key, s)
		case v < 0 || v > MaxDirectoryLatency:
			b.errf(at("directory", -1, key), "directory %s %s: want 0 to %s", key, v, MaxDirectoryLatency)
		default:
			return v
		}
		return 0
	}
	count := func(key string, n *int, def int) int {
		if n == nil {
			return def
		}
		if *n < 0 || *n > maxLookups {
			b.errf(at("directory", -1, key), "directory %s %d: want 0 to %d", key, *n, maxLookups)
			return def
		}
		return *n
	}
	d.Latency = dur("latency", y.Latency)
	d.Jitter = dur("jitter", y.Jitter)
	d.LoginLookups = count("lookups_per_login", y.LoginLookups, DefaultLoginLookups)
	d.AuthorizeLookups = count("lookups_per_authorize", y.AuthorizeLookups, DefaultAuthorizeLookups)
	return d
}

// lookups is how many directory lookups a request makes: IsProtected and
// the configuration calls none.
func (d Directory) lookups(req *tlipb.Request) int {
	switch req.GetBody().(type) {
	case *tlipb.Request_Login:
		return d.LoginLookups
	case *tlipb.Request_Authorize:
		return d.AuthorizeLookups
	}
	return 0
}

// wait is n lookups at latency (give or take jitter each): it returns the
// time they took, or less and ctx's error when ctx ends first.
func (d Directory) wait(ctx context.Context, n int, latency time.Duration) (time.Duration, error) {
	var total time.Duration
	for range n {
		l := latency
		if d.Jitter > 0 {
			l += time.Duration(rand.Int64N(int64(2*d.Jitter)+1)) - d.Jitter
		}
		total += max(l, 0)
	}
	if total <= 0 {
		return 0, nil
	}
	t := time.NewTimer(total)
	defer t.Stop()
	start := time.Now()
	select {
	case <-t.C:
		return total, nil
	case <-ctx.Done():
		return time.Since(start), ctx.Err()
	}
}

// evaluate is a worker thread's work on one request: the user directory's
// lookups first (Login and Authorize only), then the answer.
func (s *Server) evaluate(j *job) (*tlipb.Response, time.Duration) {
	var waited time.Duration
	if !j.sc.Admin {
		d := s.cfg.Store.Directory()
		if n := d.lookups(j.req); n > 0 {
			lat := d.Latency
			if p := s.dirLatency.Load(); p != nil {
				lat = *p
			}
			s.metrics.lookups.Add(float64(n))
			w, err := d.wait(j.ctx, n, lat)
			waited = w
			if err != nil {
				return failure("the Policy Server is stopping"), waited
			}
		}
	}
	return s.dispatch(j.ctx, j.sc, j.req, j.log), waited
}
