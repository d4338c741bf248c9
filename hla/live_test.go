package hla

// These tests put the agent in front of a real Policy Server on loopback,
// loaded with the seed store, and drive it with an HTTP client the way a
// browser would (cookie jar, redirects followed by hand).

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/policyserver/pstest"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

// liveWait bounds what normally takes milliseconds, so that a hang fails
// the test instead of stalling it; nothing asserts on durations.
const liveWait = 10 * time.Second

// tliClient adapts one tli.Client to PolicyClient. A tli.Client carries one
// request at a time; the lock makes that explicit for the agent's
// concurrent requests (the real agent has a pool instead).
type tliClient struct {
	mu sync.Mutex
	c  *tli.Client
}

func (a *tliClient) Do(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.c.Do(ctx, req)
}

// liveRig is a browser, an agent behind an HTTP server, and a Policy Server.
type liveRig struct {
	ps     *pstest.Server
	agent  *Agent
	srv    *httptest.Server
	client *http.Client
}

func newLiveRig(t *testing.T, aco conf.ACO, next http.Handler) *liveRig {
	t.Helper()
	ps := pstest.Start(t, "trust_wa1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), liveWait)
	defer cancel()
	c, err := tli.Dial(ctx, ps.Addr, tli.ClientConfig{TrustedHost: "trust_wa1", Secret: ps.Secret})
	if err != nil {
		t.Fatalf("tli.Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	a, err := NewAgent(Config{Client: &tliClient{c: c}, AgentName: "wa1", ACO: aco, Next: next, RequestTimeout: liveWait})
	if err != nil {
		t.Fatalf("NewAgent: %v", err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	client := srv.Client()
	client.Jar = jar
	client.Timeout = liveWait
	// Redirects are steps the tests look at one by one.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &liveRig{ps: ps, agent: a, srv: srv, client: client}
}

type liveResp struct {
	status int
	header http.Header
	body   string
	resp   *http.Response
}

func (lr *liveRig) send(t *testing.T, r *http.Request) liveResp {
	t.Helper()
	resp, err := lr.client.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", r.Method, r.URL, err)
	}
	return liveResp{status: resp.StatusCode, header: resp.Header, body: string(b), resp: resp}
}

func (lr *liveRig) get(t *testing.T, path string, change func(*http.Request)) liveResp {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, lr.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(r)
	}
	return lr.send(t, r)
}

func (lr *liveRig) post(t *testing.T, path string, form url.Values) liveResp {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, lr.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return lr.send(t, r)
}

func (lr *liveRig) cookie() string {
	u, _ := url.Parse(lr.srv.URL)
	for _, c := range lr.client.Jar.Cookies(u) {
		if c.Name == SessionCookie {
			return c.Value
		}
	}
	return ""
}

func basic(user, pw string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pw) }
}

func shows(body, name, value string) bool {
	return strings.Contains(body, "<td>"+name+"</td><td>"+value+"</td>")
}

func seedACO(resources, sessions int) conf.ACO {
	aco := conf.DefaultACO()
	aco.Name, aco.DefaultAgentName = "aco.wa1", "wa1"
	aco.MaxResourceCacheSize, aco.MaxSessionCacheSize = resources, sessions
	return aco
}

// TestLive runs the request path against the real Policy Server, with the
// agent cache off (the seed's setting) and on.
func TestLive(t *testing.T) {
	for _, cache := range []struct {
		name string
		aco  conf.ACO
	}{{"cache off", seedACO(0, 0)}, {"cache on", seedACO(700, 700)}} {
		t.Run(cache.name, func(t *testing.T) {
			t.Run("public page", func(t *testing.T) {
				lr := newLiveRig(t, cache.aco, NewSite())
				r := lr.get(t, "/", func(r *http.Request) { r.Header.Set("SM_USER", "admin"); r.Header["SM-USERDN"] = []string{"uid=admin"} })
				if r.status != 200 || r.header.Get("WWW-Authenticate") != "" {
					t.Fatalf("status %d, WWW-Authenticate %q; want 200 and no challenge", r.status, r.header.Get("WWW-Authenticate"))
				}
				if strings.Contains(r.body, "<td>SM_") || strings.Contains(r.body, "uid=admin") {
					t.Errorf("a forged SM_* header reached the page:\n%s", r.body)
				}
				if !strings.Contains(r.body, "realm.public") {
					t.Errorf("the page does not name its realm:\n%s", r.body)
				}
				if h := lr.get(t, "/health", nil); h.status != 200 || h.body != "ok" {
					t.Errorf("/health: %d %q, want 200 ok", h.status, h.body)
				}
			})

			t.Run("basic", func(t *testing.T) {
				lr := newLiveRig(t, cache.aco, NewSite())
				r := lr.get(t, "/protected/", nil)
				if r.status != 401 || r.header.Get("WWW-Authenticate") != `Basic realm="realm.protected"` {
					t.Fatalf("no credentials: %d, WWW-Authenticate %q", r.status, r.header.Get("WWW-Authenticate"))
				}
				if r := lr.get(t, "/protected/", basic("user1", "wrong")); r.status != 401 || lr.cookie() != "" {
					t.Fatalf("bad password: %d, cookie %q; want 401 and none", r.status, lr.cookie())
				}
				r = lr.get(t, "/protected/", basic("user1", "Passw0rd1"))
				if r.status != 200 || !shows(r.body, "SM_USER", "user1") || !shows(r.body, "SM_USERDN", dnUser1) {
					t.Fatalf("good password: %d, page:\n%s", r.status, r.body)
				}
				if sc := r.header.Get("Set-Cookie"); !strings.HasPrefix(sc, SessionCookie+"=") || !strings.HasSuffix(sc, "; Path=/; HttpOnly") {
					t.Errorf("Set-Cookie %q, want SMSESSION=<token>; Path=/; HttpOnly", sc)
				}
				if strings.Contains(r.body, "Authorization") {
					t.Error("the Basic credentials reached the application")
				}
				// The browser now sends the cookie alone.
				for range 3 {
					r = lr.get(t, "/protected/", nil)
					if r.status != 200 || !shows(r.body, "SM_USER", "user1") {
						t.Fatalf("cookie reuse: %d, page:\n%s", r.status, r.body)
					}
				}
				if r := lr.get(t, "/protected/admin/", nil); r.status != 200 || !strings.Contains(r.body, "Administration") {
					t.Errorf("user1 on /protected/admin/: %d", r.status)
				}
				// Tampering with the token sends the user back to the challenge.
				tok := []byte(lr.cookie())
				tok[len(tok)/2] ^= 1
				r = lr.get(t, "/protected/", func(r *http.Request) {
					r.Header.Set("Cookie", SessionCookie+"="+string(tok))
				})
				if r.status != 401 || !clearsCookie(r.resp) {
					t.Errorf("tampered cookie: %d, Set-Cookie %q; want 401 and the cookie cleared", r.status, r.header.Values("Set-Cookie"))
				}
			})

			t.Run("denied", func(t *testing.T) {
				lr := newLiveRig(t, cache.aco, NewSite())
				if r := lr.get(t, "/protected/", basic("user2", "Passw0rd2")); r.status != 200 || !shows(r.body, "SM_USER", "user2") {
					t.Fatalf("user2 on /protected/: %d\n%s", r.status, r.body)
				}
				r := lr.get(t, "/protected/admin/", nil)
				if r.status != 403 || !strings.Contains(r.body, "/protected/admin/") {
					t.Fatalf("user2 on /protected/admin/: %d, want 403 naming the resource\n%s", r.status, r.body)
				}
				if st := lr.agent.Stats(); st.Denials != 1 {
					t.Errorf("Denials = %d, want 1", st.Denials)
				}
			})

			t.Run("forms", func(t *testing.T) {
				lr := newLiveRig(t, cache.aco, NewSite())
				r := lr.get(t, "/forms/?page=2", nil)
				loc := r.header.Get("Location")
				if r.status != 302 || loc != DefaultLoginURL+"?TARGET="+url.QueryEscape("/forms/?page=2") {
					t.Fatalf("no session: %d, Location %q", r.status, loc)
				}
				r = lr.get(t, loc, nil)
				if r.status != 200 || !strings.Contains(r.body, "realm.forms") || !strings.Contains(r.body, `name="TARGET" value="/forms/?page=2"`) {
					t.Fatalf("login form: %d\n%s", r.status, r.body)
				}
				r = lr.post(t, DefaultLoginURL, url.Values{"USER": {"user1"}, "PASSWORD": {"bad"}, "TARGET": {"/forms/?page=2"}})
				if r.status != 200 || !strings.Contains(r.body, "Login failed") || lr.cookie() != "" {
					t.Fatalf("bad password: %d, cookie %q\n%s", r.status, lr.cookie(), r.body)
				}
				r = lr.post(t, DefaultLoginURL, url.Values{"USER": {"user1"}, "PASSWORD": {"Passw0rd1"}, "TARGET": {"//evil.example/"}})
				if r.status != 400 || r.header.Get("Location") != "" || lr.cookie() != "" {
					t.Fatalf("open redirect: %d, Location %q, cookie %q; want 400, none, none", r.status, r.header.Get("Location"), lr.cookie())
				}
				r = lr.post(t, DefaultLoginURL, url.Values{"USER": {"user1"}, "PASSWORD": {"Passw0rd1"}, "TARGET": {"/forms/?page=2"}})
				if r.status != 302 || r.header.Get("Location") != "/forms/?page=2" || lr.cookie() == "" {
					t.Fatalf("good password: %d, Location %q, cookie %q", r.status, r.header.Get("Location"), lr.cookie())
				}
				r = lr.get(t, "/forms/?page=2", nil)
				if r.status != 200 || !shows(r.body, "SM_USER", "user1") || !strings.Contains(r.body, "realm.forms") {
					t.Fatalf("TARGET after login: %d\n%s", r.status, r.body)
				}
			})

			t.Run("logout", func(t *testing.T) {
				lr := newLiveRig(t, cache.aco, NewSite())
				if r := lr.get(t, "/protected/", basic("user1", "Passw0rd1")); r.status != 200 {
					t.Fatalf("login: %d", r.status)
				}
				old := lr.cookie()
				r := lr.get(t, LogoutPath, nil)
				if r.status != 200 || !clearsCookie(r.resp) || lr.cookie() != "" {
					t.Fatalf("logout: %d, Set-Cookie %q", r.status, r.header.Values("Set-Cookie"))
				}
				// The server revoked the session: replaying the old cookie
				// is challenged, cache or not.
				r = lr.get(t, "/protected/", func(r *http.Request) { r.Header.Set("Cookie", SessionCookie+"="+old) })
				if r.status != 401 {
					t.Errorf("old cookie after logout: %d, want 401", r.status)
				}
			})

			t.Run("upstream", func(t *testing.T) {
				app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, "SM_USER="+r.Header.Get("SM_USER")+" path="+r.URL.Path)
				}))
				t.Cleanup(app.Close)
				u, _ := url.Parse(app.URL)
				up, err := NewUpstream(u)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { up.(*httputil.ReverseProxy).Transport.(*http.Transport).CloseIdleConnections() })
				lr := newLiveRig(t, cache.aco, up)
				if r := lr.get(t, "/protected/x", basic("user1", "Passw0rd1")); r.status != 200 || r.body != "SM_USER=user1 path=/protected/x" {
					t.Errorf("protected: %d %q", r.status, r.body)
				}
				if r := lr.get(t, "/public", func(r *http.Request) { r.Header.Set("SM_USER", "admin") }); r.status != 200 || r.body != "SM_USER= path=/public" {
					t.Errorf("public with a forged header: %d %q", r.status, r.body)
				}
			})
		})
	}
}

// TestLivePolicyServerDown: once the server is gone the agent answers 500
// with its error code at once, every time; it neither hangs nor lets the
// request through.
func TestLivePolicyServerDown(t *testing.T) {
	app := &seen{}
	lr := newLiveRig(t, seedACO(0, 0), app)
	if r := lr.get(t, "/", nil); r.status != 200 {
		t.Fatalf("before: %d", r.status)
	}
	lr.ps.Stop()
	for i := range 2 {
		r := lr.get(t, "/", nil)
		if r.status != 500 || !strings.Contains(r.body, "Error: ["+codeIsProtected+"]") {
			t.Fatalf("request %d after the server stopped: %d, want 500 [%s]\n%s", i, r.status, codeIsProtected, r.body)
		}
	}
	if calls, _ := app.get(); calls != 1 {
		t.Errorf("the application was called %d times, want 1 (before the server stopped)", calls)
	}
	if st := lr.agent.Stats(); st.Errors != 2 {
		t.Errorf("Errors = %d, want 2", st.Errors)
	}
}
