package hla

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
)

func TestNewAgentChecksConfig(t *testing.T) {
	ps := newFakePS(t, time.Now)
	good := Config{Client: ps, AgentName: "wa1", Next: NewSite()}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for none
	}{
		{"good", func(*Config) {}, ""},
		{"no client", func(c *Config) { c.Client = nil }, "no Policy Server client"},
		{"no agent name", func(c *Config) { c.AgentName = "" }, "no agent name"},
		{"no application", func(c *Config) { c.Next = nil }, "no application"},
		{"negative cache", func(c *Config) { c.ACO.MaxSessionCacheSize = -1 }, "negative"},
		{"negative timeout", func(c *Config) { c.RequestTimeout = -time.Second }, "request timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := NewAgent(cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("NewAgent: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("NewAgent error = %v, want one saying %q", err, tt.want)
			}
		})
	}
}

// TestResourceCache shows the seed's point: with the cache off every page
// load sends IsProtected; with it on, one does for many loads.
func TestResourceCache(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		timeout   time.Duration
		target    string
		loads     int
		advance   time.Duration // between loads
		wantIsPro int
	}{
		{name: "off, public", size: 0, timeout: 600 * time.Second, target: "/", loads: 5, wantIsPro: 5},
		{name: "on, public", size: 10, timeout: 600 * time.Second, target: "/", loads: 5, wantIsPro: 1},
		{name: "on, protected", size: 10, timeout: 600 * time.Second, target: "/protected/", loads: 5, wantIsPro: 1},
		{name: "on, zero timeout is off", size: 10, timeout: 0, target: "/", loads: 3, wantIsPro: 3},
		{name: "on, entries expire", size: 10, timeout: 600 * time.Second, target: "/", loads: 3, advance: 600 * time.Second, wantIsPro: 3},
		{name: "on, entries live their timeout", size: 10, timeout: 600 * time.Second, target: "/", loads: 3, advance: 299 * time.Second, wantIsPro: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aco := cacheACO(tt.size, 0)
			aco.ResourceCacheTimeout = conf.Seconds(tt.timeout)
			rg := newRig(t, aco)
			for i := range tt.loads {
				if i > 0 {
					rg.clk.Advance(tt.advance)
				}
				w := rg.do(req{target: tt.target, cookie: rg.ps.token(t, "user1")})
				if w.Code != http.StatusOK {
					t.Fatalf("load %d: status %d, body %s", i, w.Code, w.Body)
				}
			}
			if got := rg.ps.count("IsProtected"); got != tt.wantIsPro {
				t.Errorf("IsProtected sent %d times for %d loads, want %d", got, tt.loads, tt.wantIsPro)
			}
			st := rg.agent.Stats()
			if st.IsProtectedSent != int64(tt.wantIsPro) || st.Requests != int64(tt.loads) {
				t.Errorf("Stats: IsProtectedSent %d, Requests %d; want %d, %d", st.IsProtectedSent, st.Requests, tt.wantIsPro, tt.loads)
			}
			if tt.size > 0 && tt.timeout > 0 && st.ResourceCacheHits+st.ResourceCacheMisses != int64(tt.loads) {
				t.Errorf("Stats: %d hits + %d misses, want %d lookups", st.ResourceCacheHits, st.ResourceCacheMisses, tt.loads)
			}
		})
	}
}

func TestResourceCacheEvictsLeastRecentlyUsed(t *testing.T) {
	rg := newRig(t, cacheACO(2, 0))
	for _, p := range []string{"/a", "/b", "/a", "/c", "/a", "/b"} {
		rg.do(req{target: p})
	}
	// /a /b miss; /a hits; /c evicts /b; /a hits; /b misses again.
	if got := rg.ps.count("IsProtected"); got != 4 {
		t.Errorf("IsProtected sent %d times, want 4", got)
	}
	if st := rg.agent.Stats(); st.ResourceCacheSize != 2 || st.ResourceCacheHits != 2 {
		t.Errorf("Stats: size %d hits %d, want 2 and 2", st.ResourceCacheSize, st.ResourceCacheHits)
	}
}

// TestSessionCache: Authorize answers are cached per session and resource.
func TestSessionCache(t *testing.T) {
	tests := []struct {
		name          string
		size          int
		loginHere     bool // the session was opened through this agent
		loads         int
		wantAuthorize int // after the login
	}{
		{name: "off", size: 0, loginHere: true, loads: 5, wantAuthorize: 5},
		{name: "on", size: 10, loginHere: true, loads: 5, wantAuthorize: 0},
		// A session another worker opened: its end is unknown here, so its
		// decisions are not cached (a cached YES must not outlive it).
		{name: "on, session from elsewhere", size: 10, loginHere: false, loads: 5, wantAuthorize: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, cacheACO(0, tt.size))
			cookie := rg.ps.token(t, "user1")
			if tt.loginHere {
				cookie = rg.login(t, "user1")
			}
			before := rg.ps.count("Authorize")
			for i := range tt.loads {
				w := rg.do(req{target: "/protected/", cookie: cookie})
				if w.Code != http.StatusOK {
					t.Fatalf("load %d: status %d", i, w.Code)
				}
				if _, h := rg.app.get(); h.Get("SM_USER") != "user1" {
					t.Fatalf("load %d: the application got SM_USER %q, want user1", i, h.Get("SM_USER"))
				}
			}
			if got := rg.ps.count("Authorize") - before; got != tt.wantAuthorize {
				t.Errorf("Authorize sent %d times for %d loads, want %d", got, tt.loads, tt.wantAuthorize)
			}
			// Another resource is another decision.
			rg.do(req{target: "/protected/other", cookie: cookie})
			if got := rg.ps.count("Authorize") - before; got != tt.wantAuthorize+1 {
				t.Errorf("after another resource: Authorize sent %d times, want %d", got, tt.wantAuthorize+1)
			}
		})
	}
}

// TestSessionCacheLifetime: an entry lives at most an hour and never past
// the session's end (its max timeout, or its idle timeout from login).
func TestSessionCacheLifetime(t *testing.T) {
	tests := []struct {
		name       string
		life, idle time.Duration
		after      time.Duration
		wantCached bool
	}{
		{name: "within everything", life: 2 * time.Hour, idle: time.Hour, after: 30 * time.Minute, wantCached: true},
		{name: "past an hour", life: 3 * time.Hour, idle: 3 * time.Hour, after: time.Hour + time.Second, wantCached: false},
		{name: "just before an hour", life: 3 * time.Hour, idle: 3 * time.Hour, after: time.Hour - time.Second, wantCached: true},
		{name: "past the max timeout", life: 10 * time.Minute, idle: time.Hour, after: 10 * time.Minute, wantCached: false},
		{name: "past the idle timeout", life: 2 * time.Hour, idle: 5 * time.Minute, after: 5 * time.Minute, wantCached: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, cacheACO(0, 10))
			rg.ps.setSessionTimes(t, tt.life, tt.idle)
			cookie := rg.login(t, "user1")
			before := rg.ps.count("Authorize")
			rg.clk.Advance(tt.after)
			rg.do(req{target: "/protected/", cookie: cookie})
			if cached := rg.ps.count("Authorize") == before; cached != tt.wantCached {
				t.Errorf("after %s: answered from the cache = %v, want %v", tt.after, cached, tt.wantCached)
			}
		})
	}
}

// TestApply: each flush empties the caches it names, and only those.
func TestApply(t *testing.T) {
	tests := []struct {
		name          string
		ev            ManagementEvent
		wantResources int // entries left; warm-up fills 3 and 3
		wantDecisions int
		wantFlushes   int64
	}{
		{name: "flush all", ev: ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_ALL), Name: "FLUSH_ALL"}, wantResources: 0, wantDecisions: 0, wantFlushes: 1},
		{name: "flush all users", ev: ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_ALL_USERS)}, wantResources: 3, wantDecisions: 0, wantFlushes: 1},
		{name: "flush one user", ev: ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_USER), Arg: "0e000000-dir/" + dnUser1}, wantResources: 3, wantDecisions: 1, wantFlushes: 1},
		{name: "flush one user, bare DN in another case", ev: ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_USER), Arg: strings.ToUpper(dnUser2)}, wantResources: 3, wantDecisions: 2, wantFlushes: 1},
		{name: "flush an unknown user", ev: ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_USER), Arg: "uid=nobody,dc=x"}, wantResources: 3, wantDecisions: 3, wantFlushes: 1},
		{name: "flush all realms", ev: ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_ALL_REALMS)}, wantResources: 0, wantDecisions: 3, wantFlushes: 1},
		{name: "flush one realm", ev: ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_REALM), Arg: "realm.protected"}, wantResources: 2, wantDecisions: 1, wantFlushes: 1},
		{name: "agent key ignored", ev: ManagementEvent{Code: int(tlipb.ManagementCode_AGENT_KEY_NEXT), Name: "AGENT_KEY_NEXT", Arg: "key"}, wantResources: 3, wantDecisions: 3},
		{name: "affiliate key ignored", ev: ManagementEvent{Code: int(tlipb.ManagementCode_AFFILIATE_KEY)}, wantResources: 3, wantDecisions: 3},
		{name: "unknown code ignored", ev: ManagementEvent{Code: 999}, wantResources: 3, wantDecisions: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, cacheACO(10, 10))
			u1 := rg.login(t, "user1")                // resource /protected/, decision user1 /protected/
			u2 := rg.login(t, "user2")                // decision user2 /protected/
			rg.do(req{target: "/forms/", cookie: u1}) // resource /forms/, decision user1 /forms/
			rg.do(req{target: "/"})                   // resource /
			if st := rg.agent.Stats(); st.ResourceCacheSize != 3 || st.SessionCacheSize != 3 {
				t.Fatalf("after warm-up: %d resources, %d decisions cached; want 3 and 3", st.ResourceCacheSize, st.SessionCacheSize)
			}
			rg.agent.Apply(tt.ev)
			st := rg.agent.Stats()
			if st.ResourceCacheSize != tt.wantResources || st.SessionCacheSize != tt.wantDecisions || st.Flushes != tt.wantFlushes {
				t.Errorf("after %+v: %d resources, %d decisions, %d flushes; want %d, %d, %d", tt.ev,
					st.ResourceCacheSize, st.SessionCacheSize, st.Flushes, tt.wantResources, tt.wantDecisions, tt.wantFlushes)
			}
			// What was flushed is asked again, what was kept is not.
			before := rg.ps.snapshot()
			rg.do(req{target: "/protected/", cookie: u1})
			rg.do(req{target: "/protected/", cookie: u2})
			rg.do(req{target: "/forms/", cookie: u1})
			rg.do(req{target: "/"})
			after := rg.ps.snapshot()
			sentIsPro := after["IsProtected"] - before["IsProtected"]
			sentAuthz := after["Authorize"] - before["Authorize"]
			if sentIsPro != 3-tt.wantResources || sentAuthz != 3-tt.wantDecisions {
				t.Errorf("reloading sent %d IsProtected and %d Authorize, want %d and %d",
					sentIsPro, sentAuthz, 3-tt.wantResources, 3-tt.wantDecisions)
			}
		})
	}
}

func TestLogout(t *testing.T) {
	rg := newRig(t, cacheACO(10, 10))
	cookie := rg.login(t, "user1")
	w := rg.do(req{method: http.MethodPost, target: LogoutPath, cookie: cookie})
	if w.Code != http.StatusOK {
		t.Fatalf("logout: status %d, body %s", w.Code, w.Body)
	}
	if !clearsCookie(w.Result()) {
		t.Errorf("logout did not clear the cookie: %q", w.Header().Values("Set-Cookie"))
	}
	if rg.ps.count("Logout") != 1 {
		t.Errorf("Logout sent %d times, want 1", rg.ps.count("Logout"))
	}
	if st := rg.agent.Stats(); st.SessionCacheSize != 0 || st.Logouts != 1 || st.LogoutSent != 1 {
		t.Errorf("Stats after logout: %+v", st)
	}
	// The cached YES went with the session: the old cookie is challenged.
	if w := rg.do(req{target: "/protected/", cookie: cookie}); w.Code != http.StatusUnauthorized {
		t.Errorf("old cookie after logout: status %d, want 401", w.Code)
	}
	// Without a session there is nothing to tell the server.
	if w := rg.do(req{target: LogoutPath}); w.Code != http.StatusOK || rg.ps.count("Logout") != 1 {
		t.Errorf("logout without a session: status %d, Logout sent %d times; want 200 and still 1", w.Code, rg.ps.count("Logout"))
	}
}

func clearsCookie(resp *http.Response) bool {
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie && c.Value == "" && c.MaxAge < 0 {
			return true
		}
	}
	return false
}

func TestChallenges(t *testing.T) {
	tests := []struct {
		name         string
		r            req
		wantStatus   int
		wantAuth     string // WWW-Authenticate
		wantLocation string
		wantClear    bool // the request's cookie is cleared
		wantLogin    int  // Login requests sent
	}{
		{name: "basic, no session", r: req{target: "/protected/"}, wantStatus: 401, wantAuth: `Basic realm="realm.protected"`},
		{name: "basic, bad password", r: req{target: "/protected/", user: "user1", password: "nope"}, wantStatus: 401, wantAuth: `Basic realm="realm.protected"`, wantLogin: 1},
		{name: "basic, bad cookie", r: req{target: "/protected/", cookie: "forged"}, wantStatus: 401, wantAuth: `Basic realm="realm.protected"`, wantClear: true},
		{name: "basic, bad cookie and good password", r: req{target: "/protected/", cookie: "forged", user: "user1", password: "Passw0rd1"}, wantStatus: 200, wantLogin: 1},
		{name: "basic, empty user", r: req{target: "/protected/", user: "", password: "x"}, wantStatus: 401, wantAuth: `Basic realm="realm.protected"`},
		{name: "forms, no session", r: req{target: "/forms/page?a=1&b=2"}, wantStatus: 302,
			wantLocation: DefaultLoginURL + "?TARGET=" + url.QueryEscape("/forms/page?a=1&b=2")},
		{name: "forms, bad cookie", r: req{target: "/forms/", cookie: "forged"}, wantStatus: 302,
			wantLocation: DefaultLoginURL + "?TARGET=%2Fforms%2F", wantClear: true},
		{name: "forms ignores Basic credentials", r: req{target: "/forms/", user: "user1", password: "Passw0rd1"}, wantStatus: 302,
			wantLocation: DefaultLoginURL + "?TARGET=%2Fforms%2F"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, cacheACO(0, 0))
			w := rg.do(tt.r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.wantAuth {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.wantAuth)
			}
			if got := w.Header().Get("Location"); got != tt.wantLocation {
				t.Errorf("Location %q, want %q", got, tt.wantLocation)
			}
			if got := clearsCookie(w.Result()); got != tt.wantClear {
				t.Errorf("cookie cleared = %v, want %v", got, tt.wantClear)
			}
			if got := rg.ps.count("Login"); got != tt.wantLogin {
				t.Errorf("Login sent %d times, want %d", got, tt.wantLogin)
			}
			if calls, _ := rg.app.get(); (calls == 1) != (tt.wantStatus == 200) {
				t.Errorf("the application was called %d times", calls)
			}
		})
	}
}

func TestDenied(t *testing.T) {
	rg := newRig(t, cacheACO(0, 0))
	w := rg.do(req{target: "/protected/admin/", user: "user2", password: "Passw0rd2"})
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "/protected/admin/") {
		t.Fatalf("status %d, body %s; want 403 naming the resource", w.Code, w.Body)
	}
	if calls, _ := rg.app.get(); calls != 0 {
		t.Error("a denied request reached the application")
	}
	if st := rg.agent.Stats(); st.Denials != 1 {
		t.Errorf("Denials = %d, want 1", st.Denials)
	}
}

// TestForgedHeaders: a client's SM_* headers never reach the application,
// in any spelling a CGI gateway would read as the same variable.
func TestForgedHeaders(t *testing.T) {
	forged := map[string]string{
		"Sm_user": "admin", "SM-USER": "admin", "sm_userdn": "uid=admin", "SM_UNIVERSALID": "x", "Sm-Authdirname": "x",
		"X-Other": "kept",
	}
	tests := []struct {
		name     string
		r        req
		wantUser []string
	}{
		{name: "public page", r: req{target: "/", headers: forged}},
		{name: "protected page", r: req{target: "/protected/", user: "user1", password: "Passw0rd1", headers: forged}, wantUser: []string{"user1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, cacheACO(0, 0))
			if w := rg.do(tt.r); w.Code != http.StatusOK {
				t.Fatalf("status %d", w.Code)
			}
			_, h := rg.app.get()
			for k, v := range h {
				if isSMHeader(k) && !(strings.EqualFold(k, "SM_USER") && fmt.Sprint(v) == fmt.Sprint(tt.wantUser)) &&
					!(strings.EqualFold(k, "SM_USERDN") && tt.wantUser != nil) {
					t.Errorf("the application got %s: %q", k, v)
				}
			}
			if got := h.Values("SM_USER"); fmt.Sprint(got) != fmt.Sprint(tt.wantUser) {
				t.Errorf("SM_USER = %q, want %q", got, tt.wantUser)
			}
			if h.Get("X-Other") != "kept" {
				t.Error("an ordinary header was dropped")
			}
			if tt.r.user != "" && h.Get("Authorization") != "" {
				t.Error("the Basic credentials for the agent reached the application")
			}
		})
	}
}

// TestPolicyHeaderSpellings: a policy header outside SM_* replaces what the
// client sent under any spelling, and a header that cannot travel is dropped.
func TestPolicyHeaderSpellings(t *testing.T) {
	rg := newRig(t, cacheACO(0, 0))
	rg.ps.setHook(func(_ context.Context, r *tlipb.Request) (*tlipb.Response, error) {
		if _, ok := r.GetBody().(*tlipb.Request_Authorize); !ok {
			return nil, errUseSeed
		}
		return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_Authorize{Authorize: &tlipb.AuthorizeResponse{
			Headers: []*tlipb.Header{{Name: "X-Remote_User", Value: "user1"}, {Name: "X-Bad", Value: "a\r\nX-Injected: 1"}, {Name: "bad name", Value: "v"}},
		}}}, nil
	})
	w := rg.do(req{target: "/protected/", cookie: rg.ps.token(t, "user1"), headers: map[string]string{"X-Remote-User": "admin", "x_remote_user": "admin"}})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	_, h := rg.app.get()
	var got []string
	for k, v := range h {
		if sameHeader(k, "X-Remote-User") {
			got = append(got, k+"="+strings.Join(v, ","))
		}
	}
	if len(got) != 1 || !strings.HasSuffix(got[0], "=user1") {
		t.Errorf("X-Remote-User spellings reaching the application: %q, want only the policy's", got)
	}
	if h.Get("X-Bad") != "" || h.Get("X-Injected") != "" || len(h.Values("bad name")) != 0 {
		t.Errorf("an invalid policy header reached the application: %v", h)
	}
}

func TestBadPaths(t *testing.T) {
	for _, target := range []string{
		"/public/../protected/",
		"/protected/./admin/",
		"/protected/..",
		"/protected//admin/",
		"/protected%2Fadmin/",
		"/protected%2fadmin/",
		"/protected%5Cadmin/",
		"/protected%252Fadmin/",
		"/a%00b",
		"/a%0Ab",
	} {
		t.Run(target, func(t *testing.T) {
			rg := newRig(t, cacheACO(0, 0))
			w := rg.do(req{target: target})
			if w.Code != http.StatusBadRequest {
				t.Errorf("status %d, want 400", w.Code)
			}
			if n := rg.ps.total.Load(); n != 0 {
				t.Errorf("%d requests sent to the Policy Server for a bad URL", n)
			}
		})
	}
	// Percent-encoding of ordinary characters is fine: the decoded path is
	// what the server judges and the application serves.
	rg := newRig(t, cacheACO(0, 0))
	if w := rg.do(req{target: "/prot%65cted/"}); w.Code != http.StatusUnauthorized {
		t.Errorf("/prot%%65cted/: status %d, want the challenge of /protected/", w.Code)
	}
}

// TestLoginForm covers the form's edges; the whole flow against a real
// Policy Server is in TestLive.
func TestLoginForm(t *testing.T) {
	const fcc = DefaultLoginURL
	good := url.Values{"USER": {"user1"}, "PASSWORD": {"Passw0rd1"}, "TARGET": {"/forms/a?b=c"}}
	with := func(k, v string) url.Values {
		f := maps.Clone(good)
		f[k] = []string{v}
		return f
	}
	type formCase struct {
		name         string
		r            req
		wantStatus   int
		wantLocation string
		wantBody     string
		wantCookie   bool
		wantLogin    int
	}
	tests := []formCase{
		{name: "form", r: req{target: fcc + "?TARGET=%2Fforms%2Fa"}, wantStatus: 200, wantBody: "realm.forms"},
		{name: "form escapes TARGET", r: req{target: fcc + "?TARGET=" + url.QueryEscape(`/forms/?q="><script>`)}, wantStatus: 200, wantBody: `value="/forms/?q=&#34;&gt;&lt;script&gt;"`},
		{name: "good login", r: req{method: "POST", target: fcc, form: good}, wantStatus: 302, wantLocation: "/forms/a?b=c", wantCookie: true, wantLogin: 1},
		{name: "bad password", r: req{method: "POST", target: fcc, form: with("PASSWORD", "x")}, wantStatus: 200, wantBody: "Login failed", wantLogin: 1},
		{name: "no user", r: req{method: "POST", target: fcc, form: with("USER", "")}, wantStatus: 200, wantBody: "Enter a user name"},
		{name: "credentials in the query are not read", r: req{method: "POST", target: fcc + "?USER=user1&PASSWORD=Passw0rd1",
			form: url.Values{"TARGET": {"/forms/"}}}, wantStatus: 200, wantBody: "Enter a user name"},
		{name: "public TARGET", r: req{target: fcc + "?TARGET=%2Fhome"}, wantStatus: 302, wantLocation: "/home"},
		{name: "no TARGET", r: req{target: fcc}, wantStatus: 400},
		{name: "method", r: req{method: "PUT", target: fcc + "?TARGET=%2Fforms%2F"}, wantStatus: 405},
	}
	for _, target := range []string{
		"//evil.example/", "/\\evil.example/", "https://evil.example/", "http:/evil.example", "evil.example",
		"javascript:alert(1)", "/forms/../protected/", "/%2F%2Fevil.example", "/forms/\r\nX: y", " /forms/",
	} {
		tests = append(tests,
			formCase{name: "POST open redirect " + target, r: req{method: "POST", target: fcc, form: with("TARGET", target)}, wantStatus: 400},
			formCase{name: "GET open redirect " + target, r: req{target: fcc + "?TARGET=" + url.QueryEscape(target)}, wantStatus: 400},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, cacheACO(0, 0))
			w := rg.do(tt.r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if got := w.Header().Get("Location"); got != tt.wantLocation {
				t.Errorf("Location %q, want %q", got, tt.wantLocation)
			}
			if !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("body does not say %q:\n%s", tt.wantBody, w.Body)
			}
			gotCookie := false
			for _, c := range w.Result().Cookies() {
				gotCookie = gotCookie || (c.Name == SessionCookie && c.Value != "")
			}
			if gotCookie != tt.wantCookie {
				t.Errorf("session cookie set = %v, want %v", gotCookie, tt.wantCookie)
			}
			if got := rg.ps.count("Login"); got != tt.wantLogin {
				t.Errorf("Login sent %d times, want %d", got, tt.wantLogin)
			}
			if calls, _ := rg.app.get(); calls != 0 {
				t.Error("the login form reached the application")
			}
		})
	}
}

// TestPolicyServerErrors: the agent fails closed, with 500. When no server
// answered, the page gives the agent's error code and text, and the log
// says why with the likely cause, as the vendor's agent does.
func TestPolicyServerErrors(t *testing.T) {
	down := fmt.Errorf("connect: %w", syscall.ECONNREFUSED)
	tests := []struct {
		name       string
		on         string // the request kind that fails; others answer like the seed
		resp       *tlipb.Response
		err        error
		r          req
		wantStatus int
		wantCode   string // the agent's error code on the page and in the log; "": an answer it cannot act on
	}{
		{name: "IsProtected: no answer", on: "IsProtected", err: down, r: req{target: "/"}, wantStatus: 500, wantCode: codeIsProtected},
		{name: "IsProtected: NOCONNECTION", on: "IsProtected", resp: &tlipb.Response{Result: tlipb.Result_NOCONNECTION}, r: req{target: "/"}, wantStatus: 500, wantCode: codeIsProtected},
		{name: "IsProtected: TIMEOUT", on: "IsProtected", resp: &tlipb.Response{Result: tlipb.Result_TIMEOUT}, r: req{target: "/"}, wantStatus: 500, wantCode: codeIsProtected},
		{name: "IsProtected: FAILURE", on: "IsProtected", resp: &tlipb.Response{Result: tlipb.Result_FAILURE, Message: "unknown agent"}, r: req{target: "/"}, wantStatus: 500},
		{name: "IsProtected: nothing at all", on: "IsProtected", r: req{target: "/"}, wantStatus: 500},
		{name: "IsProtected: CHALLENGE", on: "IsProtected", resp: &tlipb.Response{Result: tlipb.Result_CHALLENGE}, r: req{target: "/"}, wantStatus: 500},
		{name: "IsProtected: unknown scheme", on: "IsProtected", resp: &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_IsProtected{
			IsProtected: &tlipb.IsProtectedResponse{Realm: "realm.x509", AuthScheme: "x509"}}}, r: req{target: "/x/"}, wantStatus: 500},
		{name: "Authorize: no answer", on: "Authorize", err: down, r: req{target: "/protected/", cookie: "tok.user1"}, wantStatus: 500, wantCode: codeNetwork},
		{name: "Authorize: FAILURE", on: "Authorize", resp: &tlipb.Response{Result: tlipb.Result_FAILURE}, r: req{target: "/protected/", cookie: "tok.user1"}, wantStatus: 500},
		{name: "Authorize refuses a fresh session", on: "Authorize", resp: &tlipb.Response{Result: tlipb.Result_CHALLENGE},
			r: req{target: "/protected/", user: "user1", password: "Passw0rd1"}, wantStatus: 500},
		{name: "Login: no answer", on: "Login", err: down, r: req{target: "/protected/", user: "user1", password: "Passw0rd1"}, wantStatus: 500, wantCode: codeNetwork},
		{name: "Login: SUCCESS without a token", on: "Login", resp: &tlipb.Response{Result: tlipb.Result_SUCCESS},
			r: req{target: "/protected/", user: "user1", password: "Passw0rd1"}, wantStatus: 500},
		{name: "Login from the form: no answer", on: "Login", err: down,
			r: req{method: "POST", target: DefaultLoginURL, form: url.Values{"USER": {"user1"}, "PASSWORD": {"p"}, "TARGET": {"/forms/"}}}, wantStatus: 500, wantCode: codeNetwork},
		{name: "Logout: no answer", on: "Logout", err: down, r: req{target: LogoutPath, cookie: "tok.user1"}, wantStatus: 500, wantCode: codeNetwork},
		{name: "Logout: FAILURE", on: "Logout", resp: &tlipb.Response{Result: tlipb.Result_FAILURE}, r: req{target: LogoutPath, cookie: "tok.user1"}, wantStatus: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, cacheACO(10, 10))
			rg.ps.setHook(func(_ context.Context, r *tlipb.Request) (*tlipb.Response, error) {
				if kindOf(r) != tt.on {
					return nil, errUseSeed
				}
				return tt.resp, tt.err
			})
			w := rg.do(tt.r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if strings.Contains(w.Body.String(), down.Error()) {
				t.Error("the page shows the internal error")
			}
			if tt.wantCode != "" {
				if !strings.Contains(w.Body.String(), "Error: ["+tt.wantCode+"]") {
					t.Errorf("the page does not give the agent's error [%s]:\n%s", tt.wantCode, w.Body)
				}
				line := rg.logs.String()
				if !strings.Contains(line, `"message":"[`+tt.wantCode+`] `) || !strings.Contains(line, `"code":"`+tt.wantCode+`"`) {
					t.Errorf("the log has no [%s] line:\n%s", tt.wantCode, line)
				}
				if tt.err == down && !strings.Contains(line, "Likely cause: ") {
					t.Errorf("the log does not name the likely cause:\n%s", line)
				}
			} else if strings.Contains(w.Body.String(), "Error: [") {
				t.Errorf("an answer the agent cannot act on shows an agent error code:\n%s", w.Body)
			}
			if calls, _ := rg.app.get(); calls != 0 {
				t.Error("the request reached the application although the agent could not decide")
			}
			if st := rg.agent.Stats(); st.Errors != 1 {
				t.Errorf("Errors = %d, want 1", st.Errors)
			}
			if tt.r.target == LogoutPath && !clearsCookie(w.Result()) {
				t.Error("a failed logout must still clear the cookie")
			}
			// Nothing was cached from the failure: once the server is back,
			// the same request is asked again and succeeds.
			rg.ps.setHook(nil)
			if tt.on == "IsProtected" {
				if w := rg.do(req{target: "/"}); w.Code != http.StatusOK {
					t.Errorf("after recovery: status %d", w.Code)
				}
			}
		})
	}
}

// TestNoHang: a client that never answers is cut off by the agent's own
// timeout, and by the browser going away.
func TestNoHang(t *testing.T) {
	block := func(ctx context.Context, _ *tlipb.Request) (*tlipb.Response, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	t.Run("request timeout", func(t *testing.T) {
		ps := newFakePS(t, time.Now)
		ps.setHook(block)
		a, err := NewAgent(Config{Client: ps, AgentName: "wa1", Next: NewSite(), RequestTimeout: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rg := &rig{agent: a, ps: ps}
		if w := rg.do(req{target: "/"}); w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "["+codeIsProtected+"]") {
			t.Errorf("status %d, want 500 [%s]", w.Code, codeIsProtected)
		}
	})
	t.Run("client gone", func(t *testing.T) {
		rg := newRig(t, cacheACO(0, 0))
		rg.ps.setHook(block)
		ctx, cancel := context.WithCancel(context.Background())
		r, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		cancel()
		w := &discard{h: http.Header{}}
		rg.agent.ServeHTTP(w, r)
		if st := rg.agent.Stats(); st.Errors != 0 {
			t.Errorf("a client going away counted as %d server errors", st.Errors)
		}
	})
}

type discard struct {
	h      http.Header
	status int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(s int)           { d.status = s }

// TestConcurrent is for the race detector: page loads of several users,
// logouts and flushes at once, all caches on.
func TestConcurrent(t *testing.T) {
	rg := newRig(t, cacheACO(4, 4))
	users := []string{"user1", "user2"}
	cookies := map[string]string{}
	for _, u := range users {
		cookies[u] = rg.login(t, u)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				u := users[(g+i)%2]
				switch i % 10 {
				case 9:
					rg.agent.Apply(ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_ALL) + i%5})
				case 8:
					rg.agent.Stats()
				default:
					target := []string{"/", "/protected/", "/protected/admin/", "/forms/", fmt.Sprintf("/p%d", i)}[i%5]
					if w := rg.do(req{target: target, cookie: cookies[u]}); w.Code >= 500 {
						t.Errorf("%s %s: status %d", u, target, w.Code)
					}
				}
			}
		})
	}
	wg.Wait()
}

// The Policy Server moves a session's idle deadline by re-issuing its
// token in the Authorize answer: the browser must get the new cookie, or
// an active user is logged out at login time + idle timeout.
func TestRefreshedSessionToken(t *testing.T) {
	rg := newRig(t, cacheACO(0, 0))
	cookie := rg.login(t, "user1")
	rg.ps.hook = func(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
		if req.GetAuthorize() == nil {
			return nil, errUseSeed
		}
		resp := rg.ps.seed(req)
		resp.GetAuthorize().SessionToken = cookie + "-refreshed"
		return resp, nil
	}
	for i := 0; i < 2; i++ {
		w := rg.do(req{target: "/protected/", cookie: cookie})
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
		var got string
		for _, c := range w.Result().Cookies() {
			if c.Name == SessionCookie {
				got = c.Value
			}
		}
		if want := cookie + "-refreshed"; got != want {
			t.Errorf("load %d: cookie %q, want %q", i, got, want)
		}
	}
}

// A cached decision must not replay a refresh: the token it carried went
// to the browser with the answer that brought it.
func TestRefreshedSessionTokenNotCached(t *testing.T) {
	rg := newRig(t, cacheACO(0, 700))
	cookie := rg.login(t, "user1")
	rg.ps.hook = func(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
		if req.GetAuthorize() == nil {
			return nil, errUseSeed
		}
		resp := rg.ps.seed(req)
		resp.GetAuthorize().SessionToken = cookie + "-refreshed"
		return resp, nil
	}
	cookies := func(w *httptest.ResponseRecorder) (n int) {
		for _, c := range w.Result().Cookies() {
			if c.Name == SessionCookie {
				n++
			}
		}
		return n
	}
	if w := rg.do(req{target: "/protected/other", cookie: cookie}); cookies(w) != 1 {
		t.Errorf("the answer that carried the refresh set %d cookies", cookies(w))
	}
	if w := rg.do(req{target: "/protected/other", cookie: cookie}); cookies(w) != 0 {
		t.Errorf("a cached decision set %d cookies", cookies(w))
	}
}

// A flush that arrives while a request is at the Policy Server must not be
// undone by that request's answer landing in the cache after the purge.
func TestFlushDuringRequestIsNotUndone(t *testing.T) {
	rg := newRig(t, cacheACO(700, 700))
	flushed := false
	rg.ps.hook = func(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
		if req.GetIsProtected() != nil && !flushed {
			flushed = true
			rg.agent.Apply(ManagementEvent{Code: int(tlipb.ManagementCode_FLUSH_ALL), Name: "FLUSH_ALL"})
		}
		return nil, errUseSeed
	}
	for i := 0; i < 2; i++ {
		if w := rg.do(req{target: "/"}); w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
	}
	if n := rg.ps.count("IsProtected"); n != 2 {
		t.Errorf("%d IsProtected sent, want 2: the answer from before the flush was cached", n)
	}
}
