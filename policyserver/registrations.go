package policyserver

// Trusted hosts come from two places: the store's trusted_hosts (fixed for
// the life of the process) and registrations made at run time by smreghost.
// Registrations may live in a file that several Policy Servers share, like
// the vendor's shared policy store: a host registered through smps2 must
// be able to connect to smps1 at once, without a restart.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/gofrs/flock"

	"github.com/agentlab/agentlab/atomicfile"
	"github.com/agentlab/agentlab/yamlfile"
)

// TrustedHost is a host allowed to connect as an agent, with the shared
// secret its handshake must prove and the HCO it asked for at registration.
type TrustedHost struct {
	Name   string
	Secret []byte
	HCO    string
}

// SharedSecretLen is the size of a generated shared secret.
const SharedSecretLen = 32

// Waiting longer than lockWait for the registrations lock means something
// is wrong: a write holds it for milliseconds. A server that dies holding
// it does not block the others: the kernel releases a dead process's lock.
const lockWait = 10 * time.Second

type regHost struct {
	TrustedHost
	registered string // RFC 3339, for people reading the file
}

type regSnapshot struct {
	path  string // "" when registrations are kept in memory only
	hosts map[string]regHost
	fi    os.FileInfo // of the file the hosts were read from; nil if it did not exist
}

type registrations struct {
	mu   sync.Mutex // serialises reloads and writes within this process
	snap atomic.Pointer[regSnapshot]
}

type yamlRegistrations struct {
	TrustedHosts []yamlRegHost `yaml:"trusted_hosts"`
}

type yamlRegHost struct {
	Name       string `yaml:"name"`
	Secret     string `yaml:"secret"` // hex
	HCO        string `yaml:"hco"`
	Registered string `yaml:"registered,omitempty"`
}

const registrationsHeader = `# agentlab trusted-host registrations. Written by the Policy Servers when
# smreghost registers a host, read by every server that shares this file.
# Secrets are hex: this is a lab, not a vault. Do not edit while servers run.
`

// UseRegistrations makes path the registrations file: it is read now if it
// exists, re-read whenever it changes, and written by RegisterHost.
func (s *Store) UseRegistrations(path string) error {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	snap, err := readRegistrations(path)
	if err != nil {
		return err
	}
	s.reg.snap.Store(snap)
	return nil
}

// TrustedHost looks a host up, registrations first (a registration with -o
// replaces a host of the store). It re-reads the registrations file when
// the file has changed since the last look, which costs one stat per call:
// handshakes call it, requests do not.
func (s *Store) TrustedHost(name string) (TrustedHost, bool) {
	snap := s.currentRegistrations()
	if h, ok := snap.hosts[name]; ok {
		return h.clone(), true
	}
	if h, ok := s.staticHosts[name]; ok {
		return h.clone(), true
	}
	return TrustedHost{}, false
}

func (h TrustedHost) clone() TrustedHost {
	h.Secret = bytes.Clone(h.Secret)
	return h
}

func (s *Store) currentRegistrations() *regSnapshot {
	snap := s.reg.snap.Load()
	if snap.path == "" || !changed(snap) {
		return snap
	}
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	snap = s.reg.snap.Load()
	if !changed(snap) {
		return snap
	}
	fresh, err := readRegistrations(snap.path)
	if err != nil {
		// A file that cannot be read keeps the registrations we had: the
		// servers must not forget every host because of one bad edit.
		// RegisterHost reports the error.
		return snap
	}
	s.reg.snap.Store(fresh)
	return fresh
}

// changed compares size, modification time and identity: a rename gives a
// new file, so even a same-size write within the clock's resolution shows.
func changed(snap *regSnapshot) bool {
	fi, err := os.Stat(snap.path)
	if err != nil {
		return snap.fi != nil || !errors.Is(err, fs.ErrNotExist)
	}
	return snap.fi == nil || !os.SameFile(fi, snap.fi) || fi.Size() != snap.fi.Size() || !fi.ModTime().Equal(snap.fi.ModTime())
}

func readRegistrations(path string) (*regSnapshot, error) {
	snap := &regSnapshot{path: path, hosts: map[string]regHost{}}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return snap, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registrations: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the recorded identity is that of
	// the bytes read even if a writer renames a new file in meanwhile.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("registrations: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("registrations: %w", err)
	}
	var y yamlRegistrations
	if err := yamlfile.Decode(path, data, &y); err != nil {
		return nil, err
	}
	for i, h := range y.TrustedHosts {
		if err := checkName(h.Name); err != nil {
			return nil, fmt.Errorf("%s: trusted host %d %v", path, i+1, err)
		}
		secret, err := hex.DecodeString(h.Secret)
		if err != nil || len(secret) == 0 {
			return nil, fmt.Errorf("%s: trusted host %q: secret must be hex digits", path, h.Name)
		}
		snap.hosts[h.Name] = regHost{TrustedHost: TrustedHost{Name: h.Name, Secret: secret, HCO: h.HCO}, registered: h.Registered}
	}
	snap.fi = fi
	return snap, nil
}

// CheckAdmin checks the administrator credentials registration needs. The
// error says why, for the server log; smreghost should be told only that
// registration failed.
func (s *Store) CheckAdmin(user, pw string) error {
	if s.admin == nil {
		dummyHash().check(pw)
		return fmt.Errorf("%w: the store has no administrator", ErrBadAdmin)
	}
	if user != s.admin.name {
		dummyHash().check(pw)
		return fmt.Errorf("%w: unknown administrator %q", ErrBadAdmin, user)
	}
	if !s.admin.hash.check(pw) {
		return fmt.Errorf("%w: wrong password for administrator %q", ErrBadAdmin, user)
	}
	return nil
}

// RegisterHost registers (or with overwrite, re-registers) a trusted host
// for an HCO, as smreghost asks. An empty secret gets a random one of
// SharedSecretLen bytes. With a registrations file, the file is re-read
// under a lock, changed and replaced atomically, so that two servers
// registering at the same time keep both hosts. ctx bounds the wait for
// the lock (as does lockWait).
func (s *Store) RegisterHost(ctx context.Context, name, hco string, overwrite bool, secret []byte) (TrustedHost, error) {
	if err := checkName(name); err != nil {
		return TrustedHost{}, fmt.Errorf("%w: %v", ErrBadHostName, err)
	}
	if _, ok := s.hcos[hco]; !ok {
		return TrustedHost{}, fmt.Errorf("registration of %q: %w %q", name, ErrUnknownHCO, hco)
	}
	if len(secret) == 0 {
		secret = make([]byte, SharedSecretLen)
		if _, err := rand.Read(secret); err != nil {
			return TrustedHost{}, fmt.Errorf("shared secret: %w", err)
		}
	}
	th := TrustedHost{Name: name, Secret: bytes.Clone(secret), HCO: hco}

	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	snap := s.reg.snap.Load()
	path := snap.path
	if path != "" {
		unlock, err := lockFile(ctx, path+".lock")
		if err != nil {
			return TrustedHost{}, err
		}
		defer unlock()
		// Another server may have written since we last looked.
		if snap, err = readRegistrations(path); err != nil {
			return TrustedHost{}, err
		}
	}
	_, registered := snap.hosts[name]
	_, static := s.staticHosts[name]
	if (registered || static) && !overwrite {
		return TrustedHost{}, fmt.Errorf("%w: %q is already registered; use -o to overwrite it", ErrHostExists, name)
	}
	hosts := maps.Clone(snap.hosts)
	hosts[name] = regHost{TrustedHost: th, registered: time.Now().UTC().Format(time.RFC3339)}
	next := &regSnapshot{path: path, hosts: hosts}
	if path != "" {
		fi, err := writeRegistrations(path, hosts)
		if err != nil {
			return TrustedHost{}, err
		}
		next.fi = fi
	}
	s.reg.snap.Store(next)
	return th.clone(), nil
}

func writeRegistrations(path string, hosts map[string]regHost) (os.FileInfo, error) {
	var y yamlRegistrations
	for _, name := range slices.Sorted(maps.Keys(hosts)) {
		h := hosts[name]
		y.TrustedHosts = append(y.TrustedHosts, yamlRegHost{Name: h.Name, Secret: hex.EncodeToString(h.Secret), HCO: h.HCO, Registered: h.registered})
	}
	body, err := yaml.MarshalWithOptions(&y, yaml.Indent(2), yaml.IndentSequence(true))
	if err != nil {
		return nil, fmt.Errorf("registrations: %w", err)
	}
	// 0600: the file holds the shared secrets.
	if err := atomicfile.WriteFile(path, append([]byte(registrationsHeader), body...), 0o600); err != nil {
		return nil, fmt.Errorf("registrations: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("registrations: %w", err)
	}
	return fi, nil
}

// lockFile takes an exclusive lock on path (flock(2) on Unix, LockFileEx on
// Windows) between the Policy Servers that share the registrations file.
// The lock file itself stays: removing it on unlock would let a waiter
// lock the removed file while a newcomer locks a new one, two holders at
// once. The kernel releases the lock when its process dies, so a crashed
// server never leaves a lock to break.
//
// The wait blocks in the kernel rather than polling: the kernel hands the
// lock to a waiter when it is released, where pollers would lose it, again
// and again, to whoever asks at the right moment (24 contending processes
// starved some of them past lockWait). Since that call cannot be
// cancelled, it runs on a goroutine that, when the wait was given up,
// releases the lock as soon as it gets it.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	fl := flock.New(path, flock.SetPermissions(0o600))
	// Unbuffered: a lock taken after the wait gave up must go back, not
	// sit in a buffer nobody reads (the next holder would wait forever).
	got := make(chan error)
	gaveUp := make(chan struct{})
	go func() {
		err := fl.Lock()
		select {
		case got <- err:
		case <-gaveUp:
			if err == nil {
				fl.Unlock()
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			return nil, fmt.Errorf("registrations lock %s: %w", path, err)
		}
		return func() { fl.Unlock() }, nil
	case <-ctx.Done():
		close(gaveUp)
		return nil, fmt.Errorf("registrations lock %s: another Policy Server has held it for more than %s, or the wait was cancelled: %w", path, lockWait, context.Cause(ctx))
	}
}
