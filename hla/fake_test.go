package hla

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/policyserver"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
)

// fakePS is the Policy Server an agent under test talks to, in process:
// it answers with the real server's answer (policyserver.Answer) from the
// seed store, so that it cannot drift from what smps says, and records
// every request, so that tests can count what the agent sent.
type fakePS struct {
	now func() time.Time
	// hook, when set, answers instead of the store, unless it returns
	// errUseSeed.
	hook func(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error)

	norecord bool // benchmarks: count, keep nothing
	mu       sync.Mutex
	st       *policyserver.Store
	reqs     []*tlipb.Request
	counts   map[string]int
	total    atomic.Int64
}

func newFakePS(t testing.TB, now func() time.Time) *fakePS {
	t.Helper()
	st, err := policyserver.SeedStore()
	if err != nil {
		t.Fatalf("SeedStore: %v", err)
	}
	return &fakePS{now: now, st: st, counts: map[string]int{}}
}

// setSessionTimes gives realm.protected, where the rig's logins go, other
// session timeouts: a store of its own, the seed's otherwise.
func (f *fakePS) setSessionTimes(t testing.TB, maxTimeout, idleTimeout time.Duration) {
	t.Helper()
	spec, err := policyserver.SeedSpec()
	if err != nil {
		t.Fatal(err)
	}
	for i := range spec.Realms {
		if spec.Realms[i].Name == "realm.protected" {
			idle, life := conf.Seconds(idleTimeout), conf.Seconds(maxTimeout)
			spec.Realms[i].IdleTimeout, spec.Realms[i].MaxTimeout = &idle, &life
		}
	}
	st, err := policyserver.NewStore(spec)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
}

// token is a session of user opened elsewhere (another worker, another
// agent of the farm): valid for the store, unknown to the agent's caches.
func (f *fakePS) token(t testing.TB, user string) string {
	t.Helper()
	f.mu.Lock()
	st := f.st
	f.mu.Unlock()
	sess, err := st.Login("wa1", "realm.protected", user, fakePasswords[user], f.now())
	if err != nil {
		t.Fatal(err)
	}
	return sess.Token
}

const (
	dnUser1 = "uid=user1,ou=People,dc=shared,dc=lab"
	dnUser2 = "uid=user2,ou=People,dc=shared,dc=lab"
)

// fakePasswords are the seed store's (labs/seed-store.yaml).
var fakePasswords = map[string]string{"user1": "Passw0rd1", "user2": "Passw0rd2"}

func kindOf(req *tlipb.Request) string {
	switch req.GetBody().(type) {
	case *tlipb.Request_IsProtected:
		return "IsProtected"
	case *tlipb.Request_Login:
		return "Login"
	case *tlipb.Request_Authorize:
		return "Authorize"
	case *tlipb.Request_Logout:
		return "Logout"
	}
	return "other"
}

func (f *fakePS) Do(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
	f.total.Add(1)
	f.mu.Lock()
	if !f.norecord {
		f.reqs = append(f.reqs, req)
		f.counts[kindOf(req)]++
	}
	hook := f.hook
	f.mu.Unlock()
	if hook != nil {
		if resp, err := hook(ctx, req); err != errUseSeed {
			return resp, err
		}
	}
	return f.seed(req), nil
}

func (f *fakePS) count(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[kind]
}

func (f *fakePS) snapshot() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]int, len(f.counts))
	for k, v := range f.counts {
		m[k] = v
	}
	return m
}

// errUseSeed makes a hook fall back to the store's answer.
var errUseSeed = errors.New("answer like the seed")

func (f *fakePS) setHook(h func(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

// seed is the Policy Server's answer from the store.
func (f *fakePS) seed(req *tlipb.Request) *tlipb.Response {
	f.mu.Lock()
	st := f.st
	f.mu.Unlock()
	return policyserver.Answer(st, req, f.now(), zerolog.Nop())
}

// seen records what the application received.
type seen struct {
	mu    sync.Mutex
	calls int
	last  http.Header
}

func (s *seen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls++
	s.last = r.Header.Clone()
	s.mu.Unlock()
	w.Write([]byte("app:" + r.URL.Path))
}

func (s *seen) get() (int, http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.last
}

// rig is an agent in front of a recording application, with a fake
// Policy Server and a fake clock.
type rig struct {
	agent *Agent
	ps    *fakePS
	clk   *fakeClock
	app   *seen
	logs  *testsupport.Buffer // the agent's log, JSON lines
}

func cacheACO(resources, sessions int) conf.ACO {
	return conf.ACO{
		Name: "aco.wa1", DefaultAgentName: "wa1",
		MaxResourceCacheSize: resources, ResourceCacheTimeout: conf.Seconds(600 * time.Second),
		MaxSessionCacheSize: sessions,
	}
}

func newRig(t testing.TB, aco conf.ACO) *rig {
	t.Helper()
	clk := newFakeClock()
	rg := &rig{ps: newFakePS(t, clk.Now), clk: clk, app: &seen{}, logs: &testsupport.Buffer{}}
	a, err := NewAgent(Config{Client: rg.ps, AgentName: "wa1", ACO: aco, Next: rg.app, Now: clk.Now, Log: zerolog.New(rg.logs)})
	if err != nil {
		t.Fatalf("NewAgent: %v", err)
	}
	rg.agent = a
	return rg
}

// req describes one request to the agent.
type req struct {
	method, target string
	user, password string // Basic credentials when user != ""
	cookie         string // SMSESSION
	headers        map[string]string
	form           url.Values // POST body
}

func (rg *rig) do(r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodGet
	}
	var hr *http.Request
	if r.form != nil {
		hr = httptest.NewRequest(r.method, r.target, strings.NewReader(r.form.Encode()))
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		hr = httptest.NewRequest(r.method, r.target, nil)
	}
	if r.user != "" {
		hr.SetBasicAuth(r.user, r.password)
	}
	if r.cookie != "" {
		hr.AddCookie(&http.Cookie{Name: SessionCookie, Value: r.cookie})
	}
	for k, v := range r.headers {
		hr.Header[k] = append(hr.Header[k], v)
	}
	w := httptest.NewRecorder()
	rg.agent.ServeHTTP(w, hr)
	return w
}

// login logs a user in through Basic and returns the session cookie.
func (rg *rig) login(t testing.TB, user string) string {
	t.Helper()
	w := rg.do(req{target: "/protected/", user: user, password: fakePasswords[user]})
	if w.Code != http.StatusOK {
		t.Fatalf("login %s: status %d, want 200; body %s", user, w.Code, w.Body)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == SessionCookie {
			return c.Value
		}
	}
	t.Fatalf("login %s: no %s cookie", user, SessionCookie)
	return ""
}
