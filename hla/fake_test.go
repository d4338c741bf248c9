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

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
)

// fakePS answers like the seed store (realms /, /protected/ Basic, /forms/
// Forms; user1 staff, user2 contractor denied /protected/admin/) and
// records every request, so that tests can count what the agent sent.
type fakePS struct {
	now func() time.Time
	// hook, when set, answers instead of the seed emulation, unless it
	// returns errUseSeed.
	hook func(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error)

	// life and idle are what Login says about a session.
	life, idle time.Duration

	norecord bool // benchmarks: count, keep nothing
	mu       sync.Mutex
	reqs     []*tlipb.Request
	counts   map[string]int
	revoked  map[string]bool
	total    atomic.Int64
}

func newFakePS(now func() time.Time) *fakePS {
	return &fakePS{now: now, life: 2 * time.Hour, idle: time.Hour, counts: map[string]int{}, revoked: map[string]bool{}}
}

const (
	dnUser1 = "uid=user1,ou=People,dc=shared,dc=lab"
	dnUser2 = "uid=user2,ou=People,dc=shared,dc=lab"
)

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

// errUseSeed makes a hook fall back to the seed emulation.
var errUseSeed = errors.New("answer like the seed")

func (f *fakePS) setHook(h func(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

func (f *fakePS) seed(req *tlipb.Request) *tlipb.Response {
	switch b := req.GetBody().(type) {
	case *tlipb.Request_IsProtected:
		switch res := b.IsProtected.GetResource(); {
		case strings.HasPrefix(res, "/protected/"):
			return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_IsProtected{IsProtected: &tlipb.IsProtectedResponse{
				Realm: "realm.protected", AuthScheme: "basic"}}}
		case strings.HasPrefix(res, "/forms/"):
			return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_IsProtected{IsProtected: &tlipb.IsProtectedResponse{
				Realm: "realm.forms", AuthScheme: "forms", LoginUrl: DefaultLoginURL}}}
		}
		return &tlipb.Response{Result: tlipb.Result_NO}
	case *tlipb.Request_Login:
		l := b.Login
		pw, ok := fakePasswords[l.GetUser()]
		if !ok || pw != l.GetPassword() {
			return &tlipb.Response{Result: tlipb.Result_FAILURE, Message: "login failed"}
		}
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_Login{Login: &tlipb.LoginResponse{
			SessionToken: "tok." + l.GetUser(), UserDn: "uid=" + l.GetUser() + ",ou=People,dc=shared,dc=lab",
			ExpiresUnix: f.now().Add(f.life).Unix(), IdleTimeoutSeconds: uint32(f.idle / time.Second),
		}}}
	case *tlipb.Request_Authorize:
		az := b.Authorize
		user, ok := strings.CutPrefix(az.GetSessionToken(), "tok.")
		f.mu.Lock()
		revoked := f.revoked[az.GetSessionToken()]
		f.mu.Unlock()
		if _, known := fakePasswords[user]; !ok || !known || revoked {
			return &tlipb.Response{Result: tlipb.Result_CHALLENGE, Message: "invalid session token"}
		}
		if user == "user2" && strings.HasPrefix(az.GetResource(), "/protected/admin/") {
			return &tlipb.Response{Result: tlipb.Result_NO, Message: "denied by policy policy.contractors.no-admin"}
		}
		return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_Authorize{Authorize: &tlipb.AuthorizeResponse{
			Headers: []*tlipb.Header{{Name: "SM_USER", Value: user}, {Name: "SM_USERDN", Value: "uid=" + user + ",ou=People,dc=shared,dc=lab"}},
			Policy:  "policy.staff",
		}}}
	case *tlipb.Request_Logout:
		f.mu.Lock()
		f.revoked[b.Logout.GetSessionToken()] = true
		f.mu.Unlock()
		return &tlipb.Response{Result: tlipb.Result_SUCCESS}
	}
	return &tlipb.Response{Result: tlipb.Result_FAILURE, Message: "unknown request"}
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
	rg := &rig{ps: newFakePS(clk.Now), clk: clk, app: &seen{}}
	a, err := NewAgent(Config{Client: rg.ps, AgentName: "wa1", ACO: aco, Next: rg.app, Now: clk.Now})
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
