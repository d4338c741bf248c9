// Package hla is the high-level agent: the part of the Web Agent that lives
// in every web worker (w3wp.exe, each httpd child) and asks a Policy Server
// about each request, in the vendor's order (DOMAIN.md sections 3 and 4):
// IsProtected, then Login (IsAuthenticated) when it has to challenge, then
// Authorize (IsAuthorized). It also serves the built-in site the lab shows,
// or proxies to an application that expects the SiteMinder headers.
package hla

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/pool"
	"github.com/agentlab/agentlab/proto/tlipb"
)

// PolicyClient is what the request path needs from the agent's socket pool
// (pool.Pool satisfies it). Do must honour ctx.
type PolicyClient interface {
	Do(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error)
}

// Config is what an Agent runs with.
type Config struct {
	Client    PolicyClient
	AgentName string           // the ACO's DefaultAgentName, e.g. wa1
	ACO       conf.ACO         // cache sizes and timeouts; a size of 0 turns that cache off
	Next      http.Handler     // the application: NewSite() or NewUpstream(url)
	Log       zerolog.Logger   // the zero Logger logs nothing
	Now       func() time.Time // nil = time.Now
	// RequestTimeout bounds each Policy Server call on top of the request's
	// context, so that a PolicyClient without a deadline of its own cannot
	// hold a browser forever. 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// Well-known names of the agent's URL space and cookie.
const (
	// SessionCookie carries the opaque session token Login returned.
	SessionCookie = "SMSESSION"
	// LogoutPath logs the session out, whatever the method.
	LogoutPath = "/siteminderagent/logout"
	// DefaultLoginURL is where a Forms realm that names no login URL sends
	// the browser; the agent itself serves it (the vendor's .fcc).
	DefaultLoginURL = "/siteminderagent/forms/login.fcc"
	// DefaultRequestTimeout matches the HCO's RequestTimeout default.
	DefaultRequestTimeout = 60 * time.Second
	// MaxSessionCacheTTL is how long the vendor keeps a session cache entry
	// at most, whatever the session's own lifetime.
	MaxSessionCacheTTL = time.Hour
)

// Authentication schemes as IsProtected names them.
const (
	schemeBasic = "basic"
	schemeForms = "forms"
)

// fccPrefix is the agent's own URL space: requests under it that end in
// .fcc are forms credential collectors, answered here and never passed on.
const fccPrefix = "/siteminderagent/"

// Agent is the high-level agent as an http.Handler wrapped around an
// application. It is safe for concurrent use.
type Agent struct {
	cfg     Config
	log     zerolog.Logger
	now     func() time.Time
	timeout time.Duration

	resources   *lru[resourceKey, resourceInfo]
	resourceTTL time.Duration
	// decisions is the session cache: Authorize answers per session and
	// resource. sessions is what the agent learnt at Login about each
	// token (its user and how long it lives): a decision is cached only
	// for a session whose end is known, so that a cached YES can never
	// outlive the session it was given to.
	decisions *lru[authzKey, decision]
	sessions  *lru[string, sessionInfo]
	// flushGen counts management flushes: an answer asked for before a
	// flush must not be cached after it, or the flush is undone.
	flushGen atomic.Uint64

	c counters
}

// addUnlessFlushed caches an answer obtained when flushGen was gen, unless a
// flush came meanwhile. The check after the add closes the window between
// the first check and the add: Apply counts a flush before it purges.
func addUnlessFlushed[K comparable, V any](a *Agent, c *lru[K, V], gen uint64, k K, v V, ttl time.Duration) {
	if a.flushGen.Load() != gen {
		return
	}
	c.Add(k, v, ttl)
	if a.flushGen.Load() != gen {
		c.Remove(k)
	}
}

type resourceKey struct{ method, path string }

type resourceInfo struct {
	protected bool
	realm     string
	scheme    string // schemeBasic, schemeForms or what the server said
	loginURL  string
}

type authzKey struct{ token, method, path string }

type decision struct {
	allowed bool
	headers []header
	policy  string
	reason  string
	realm   string // of the resource, for flushes of one realm
	userDN  string // of the session, for flushes of one user
	// refreshed is the session token the server re-issued with a later
	// idle deadline; it goes back to the browser once and is never cached.
	refreshed string
}

type header struct{ name, value string }

type sessionInfo struct {
	user, userDN, realm string
	deadline            time.Time
}

// NewAgent checks cfg and returns an agent with empty caches.
func NewAgent(cfg Config) (*Agent, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("no Policy Server client"))
	}
	if cfg.AgentName == "" {
		errs = append(errs, errors.New("no agent name (the ACO's DefaultAgentName)"))
	}
	if cfg.Next == nil {
		errs = append(errs, errors.New("no application to pass requests to (NewSite or NewUpstream)"))
	}
	if cfg.ACO.MaxResourceCacheSize < 0 || cfg.ACO.MaxSessionCacheSize < 0 {
		errs = append(errs, errors.New("cache sizes must not be negative"))
	}
	if cfg.ACO.ResourceCacheTimeout < 0 {
		errs = append(errs, errors.New("resource cache timeout must not be negative"))
	}
	if cfg.RequestTimeout < 0 {
		errs = append(errs, errors.New("request timeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("hla: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	a := &Agent{
		cfg:         cfg,
		log:         cfg.Log.With().Str("agent", cfg.AgentName).Logger(),
		now:         cfg.Now,
		timeout:     cfg.RequestTimeout,
		resourceTTL: cfg.ACO.ResourceCacheTimeout.D(),
	}
	// A resource cache whose entries expire at once would cost a lock per
	// request and cache nothing: treat it as off.
	if cfg.ACO.MaxResourceCacheSize > 0 && a.resourceTTL > 0 {
		a.resources = newLRU[resourceKey, resourceInfo](cfg.ACO.MaxResourceCacheSize, cfg.Now)
	}
	if cfg.ACO.MaxSessionCacheSize > 0 {
		a.decisions = newLRU[authzKey, decision](cfg.ACO.MaxSessionCacheSize, cfg.Now)
		a.sessions = newLRU[string, sessionInfo](cfg.ACO.MaxSessionCacheSize, cfg.Now)
	}
	a.log.Info().
		Int("max_resource_cache_size", a.resources.size()).
		Dur("resource_cache_timeout", a.resourceTTL).
		Int("max_session_cache_size", a.decisions.size()).
		Msgf("Agent ready: %s, %s.", cacheSays("resource cache", a.resources.size()), cacheSays("session cache", a.decisions.size()))
	return a, nil
}

// ServeHTTP runs the request path: the agent's own URLs (login form,
// logout), then IsProtected, then the session or the challenge, then
// Authorize, and finally the application with the SM_* headers the policy
// gave.
func (a *Agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.c.requests.Add(1)
	path := r.URL.Path
	if err := checkPath(path, r.URL.EscapedPath()); err != nil {
		a.badRequest(w, r, "bad URL", err)
		return
	}
	switch {
	case path == LogoutPath:
		a.serveLogout(w, r)
		return
	case strings.HasPrefix(path, fccPrefix) && strings.HasSuffix(path, ".fcc"):
		a.serveLoginForm(w, r)
		return
	}
	res, err := a.isProtected(r.Context(), r.Method, path)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !res.protected {
		a.pass(w, r, nil, false)
		return
	}
	a.serveProtected(w, r, res)
}

func (a *Agent) serveProtected(w http.ResponseWriter, r *http.Request, res resourceInfo) {
	ctx := r.Context()
	token := sessionToken(r)
	hadCookie := token != ""
	if hadCookie {
		d, ok, err := a.authorize(ctx, r, token, res)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if ok {
			if d.refreshed != "" {
				setSessionCookie(w, r, d.refreshed)
			}
			a.decide(w, r, res, d)
			return
		}
		// The session is invalid, expired or logged out: challenge as if
		// there were none, and drop the cookie so the browser stops sending it.
	}
	switch res.scheme {
	case schemeBasic:
		user, pw, ok := r.BasicAuth()
		if !ok || user == "" {
			a.challenge(w, r, res, hadCookie)
			return
		}
		tok, ok, err := a.login(ctx, r, res.realm, user, pw)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if !ok {
			a.challenge(w, r, res, hadCookie)
			return
		}
		setSessionCookie(w, r, tok)
		d, ok, err := a.authorize(ctx, r, tok, res)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if !ok {
			// Challenging again would loop the browser through its
			// password dialog for a session the server just issued.
			a.fail(w, r, &policyError{status: http.StatusInternalServerError, call: "Authorize " + r.Method + " " + r.URL.Path,
				err: errors.New("the Policy Server refused the session it has just issued")})
			return
		}
		a.decide(w, r, res, d)
	case schemeForms:
		a.challenge(w, r, res, hadCookie)
	default:
		a.fail(w, r, &policyError{status: http.StatusInternalServerError, call: "IsProtected " + r.Method + " " + r.URL.Path,
			err: fmt.Errorf("realm %q has the authentication scheme %q, which this agent does not support", res.realm, res.scheme)})
	}
}

// cacheSays tells a cache's size as the log reads it.
func cacheSays(name string, size int) string {
	if size == 0 {
		return name + " off"
	}
	return fmt.Sprintf("%s of %d entries", name, size)
}

// decide ends a request that Authorize has answered.
func (a *Agent) decide(w http.ResponseWriter, r *http.Request, res resourceInfo, d decision) {
	if d.allowed {
		a.pass(w, r, d.headers, res.scheme == schemeBasic)
		return
	}
	a.c.denials.Add(1)
	a.log.Info().Str("method", r.Method).Str("resource", r.URL.Path).Str("realm", res.realm).
		Str("policy", d.policy).Str("reason", d.reason).Msgf("Access denied: %s %s in realm %s (%s).", r.Method, r.URL.Path, res.realm, d.reason)
	a.page(w, http.StatusForbidden, "denied", pageData{
		Title: "403 Forbidden", Realm: res.realm, Method: r.Method, Resource: r.URL.Path,
	})
}

// pass hands the request to the application. Whatever SM_* headers the
// client sent are removed first, whether or not the resource is protected:
// an application behind the agent trusts them blindly.
func (a *Agent) pass(w http.ResponseWriter, r *http.Request, hs []header, consumedBasic bool) {
	if len(hs) == 0 && !consumedBasic && !hasSMHeader(r.Header) {
		a.cfg.Next.ServeHTTP(w, r)
		return
	}
	// Handlers must not change the request they were given. Only the
	// header map changes below, so a shallow copy with its own map does,
	// at a fraction of Request.Clone's cost (this is every page load).
	r2 := new(http.Request)
	*r2 = *r
	r2.Header = r.Header.Clone()
	r = r2
	stripHeaders(r.Header, func(k string) bool { return isSMHeader(k) })
	if consumedBasic && isBasicAuth(r.Header.Get("Authorization")) {
		// The password was for the agent; the application has no use for it.
		r.Header.Del("Authorization")
	}
	if len(hs) > 0 {
		// A policy may answer headers outside SM_*: those must not be
		// forgeable either, in any spelling a CGI gateway would merge.
		stripHeaders(r.Header, func(k string) bool {
			for _, h := range hs {
				if sameHeader(k, h.name) {
					return true
				}
			}
			return false
		})
		for _, h := range hs {
			r.Header.Add(h.name, h.value)
		}
	}
	a.cfg.Next.ServeHTTP(w, r)
}

// isProtected answers IsProtected from the resource cache or the server.
func (a *Agent) isProtected(ctx context.Context, method, path string) (resourceInfo, error) {
	key := resourceKey{method, path}
	if a.resources.enabled() {
		if res, ok := a.resources.Get(key); ok {
			a.c.resourceHits.Add(1)
			return res, nil
		}
		a.c.resourceMisses.Add(1)
	}
	a.c.isProtectedSent.Add(1)
	gen := a.flushGen.Load()
	call := "IsProtected " + method + " " + path
	resp, err := a.call(ctx, call, &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{
		AgentName: a.cfg.AgentName, Resource: path, Action: method,
	}}})
	if err != nil {
		return resourceInfo{}, err
	}
	var res resourceInfo
	switch resp.GetResult() {
	case tlipb.Result_NO:
	case tlipb.Result_YES:
		ip := resp.GetIsProtected()
		res = resourceInfo{protected: true, realm: ip.GetRealm(), scheme: strings.ToLower(ip.GetAuthScheme()), loginURL: ip.GetLoginUrl()}
	default:
		return resourceInfo{}, unexpected(call, resp)
	}
	addUnlessFlushed(a, a.resources, gen, key, res, a.resourceTTL)
	return res, nil
}

// authorize answers Authorize from the session cache or the server. ok is
// false when the server challenged the session.
func (a *Agent) authorize(ctx context.Context, r *http.Request, token string, res resourceInfo) (d decision, ok bool, err error) {
	key := authzKey{token, r.Method, r.URL.Path}
	if a.decisions.enabled() {
		if d, ok := a.decisions.Get(key); ok {
			a.c.sessionHits.Add(1)
			return d, true, nil
		}
		a.c.sessionMisses.Add(1)
	}
	a.c.authorizeSent.Add(1)
	gen := a.flushGen.Load()
	call := "Authorize " + r.Method + " " + r.URL.Path
	resp, err := a.call(ctx, call, &tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{
		AgentName: a.cfg.AgentName, SessionToken: token, Resource: r.URL.Path, Action: r.Method, ClientIp: clientIP(r),
	}}})
	if err != nil {
		return decision{}, false, err
	}
	switch resp.GetResult() {
	case tlipb.Result_YES:
		az := resp.GetAuthorize()
		d = decision{allowed: true, headers: a.policyHeaders(az.GetHeaders()), policy: az.GetPolicy(), realm: res.realm}
		if tok := az.GetSessionToken(); tok != "" && tok != token {
			defer func() { d.refreshed = tok }()
		}
	case tlipb.Result_NO:
		d = decision{reason: resp.GetMessage(), realm: res.realm}
	case tlipb.Result_CHALLENGE:
		a.log.Info().Str("resource", r.URL.Path).Str("reason", resp.GetMessage()).Msgf("Session challenged for %s: %s.", r.URL.Path, resp.GetMessage())
		// Whatever was cached for this session is as stale as the session.
		a.forgetSession(token)
		return decision{}, false, nil
	default:
		return decision{}, false, unexpected(call, resp)
	}
	if info, known := a.sessions.Get(token); known {
		d.userDN = info.userDN
		addUnlessFlushed(a, a.decisions, gen, key, d, min(MaxSessionCacheTTL, info.deadline.Sub(a.now())))
	}
	return d, true, nil
}

// policyHeaders keeps the response headers that can travel in an HTTP
// request: a value with a line break would be refused by the upstream
// transport, or worse, split into a header of its own by a lax one.
func (a *Agent) policyHeaders(in []*tlipb.Header) []header {
	out := make([]header, 0, len(in))
	for _, h := range in {
		if !validHeaderName(h.GetName()) || !validHeaderValue(h.GetValue()) {
			a.log.Warn().Str("header", h.GetName()).Msg("Dropped a policy response header that is not a valid HTTP header")
			continue
		}
		out = append(out, header{h.GetName(), h.GetValue()})
	}
	return out
}

// login sends Login. ok is false when the server refused the credentials;
// err is for a server that did not answer or answered nonsense.
func (a *Agent) login(ctx context.Context, r *http.Request, realm, user, password string) (token string, ok bool, err error) {
	a.c.loginSent.Add(1)
	call := "Login " + user + " realm " + realm
	resp, err := a.call(ctx, call, &tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{
		AgentName: a.cfg.AgentName, Realm: realm, User: user, Password: password, ClientIp: clientIP(r),
	}}})
	if err != nil {
		return "", false, err
	}
	switch resp.GetResult() {
	case tlipb.Result_SUCCESS:
	case tlipb.Result_FAILURE:
		// The server tells no more than "login failed", on purpose: a
		// client must not learn whether the user exists.
		a.c.loginFailures.Add(1)
		a.log.Info().Str("user", user).Str("realm", realm).Str("reason", resp.GetMessage()).Msgf("Login failed for %s in realm %s: %s.", user, realm, resp.GetMessage())
		return "", false, nil
	default:
		return "", false, unexpected(call, resp)
	}
	lr := resp.GetLogin()
	if lr.GetSessionToken() == "" {
		return "", false, &policyError{status: http.StatusInternalServerError, call: call, err: errors.New("SUCCESS without a session token")}
	}
	now := a.now()
	// The token never changes at the agent (Authorize does not hand back a
	// refreshed one), so the session ends at the first of its max timeout
	// and its idle timeout counted from now.
	var deadline time.Time
	if lr.GetExpiresUnix() > 0 {
		deadline = time.Unix(lr.GetExpiresUnix(), 0)
		if idle := lr.GetIdleTimeoutSeconds(); idle > 0 {
			deadline = minTime(deadline, now.Add(time.Duration(idle)*time.Second))
		}
		a.sessions.Add(lr.GetSessionToken(), sessionInfo{user: user, userDN: lr.GetUserDn(), realm: realm, deadline: deadline}, deadline.Sub(now))
	}
	a.log.Info().Str("user", user).Str("user_dn", lr.GetUserDn()).Str("realm", realm).Msgf("Login succeeded for %s in realm %s.", user, realm)
	return lr.GetSessionToken(), true, nil
}

func minTime(x, y time.Time) time.Time {
	if y.Before(x) {
		return y
	}
	return x
}

// forgetSession drops what the caches know about one session.
func (a *Agent) forgetSession(token string) {
	a.sessions.Remove(token)
	a.decisions.RemoveFunc(func(k authzKey, _ decision) bool { return k.token == token })
}

// policyError is a request the agent could not decide because the Policy
// Server did not answer, or answered something the agent cannot act on.
type policyError struct {
	status int    // 500: the vendor's agent fails every such request so
	call   string // "IsProtected GET /protected/", for the log and the page
	err    error
	// noAnswer marks a request no Policy Server answered (pool error,
	// TIMEOUT or NOCONNECTION): the page and the log give the agent's
	// error code (agentError) and the log the likely cause.
	noAnswer bool
}

// The agent's error codes for a request it could get no answer to, as the
// vendor's agent shows them on its HTTP 500 page and writes them in its
// log. 20-0004 is the one DOMAIN.md section 9 quotes for the build-up
// outage: the agent could not find out whether the resource is protected.
// 20-0003 is what the vendor's troubleshooting guide gives for a network
// error on a pooled connection ("Idle Timeouts and Stateful Inspection
// Devices"); we use it for the other calls (Login, Authorize, Logout),
// whose own codes the public documents do not give [our choice].
const (
	codeIsProtected = "20-0004"
	codeNetwork     = "20-0003"
)

// agentError is the code and text the agent gives for call (a policyError's
// call) when no Policy Server answered it.
func agentError(call string) (code, text string) {
	if strings.HasPrefix(call, "IsProtected ") {
		return codeIsProtected, "The Web Agent could not determine whether the resource is protected: no Policy Server answered."
	}
	return codeNetwork, "Web Agent and Policy Server network communication problem: no Policy Server answered."
}

func (e *policyError) Error() string { return e.call + ": " + e.err.Error() }
func (e *policyError) Unwrap() error { return e.err }

// call sends one request. The request's context bounds it, and so does the
// agent's own timeout: a browser that stays must not wait forever either.
func (a *Agent) call(ctx context.Context, what string, req *tlipb.Request) (*tlipb.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	resp, err := a.cfg.Client.Do(ctx, req)
	switch {
	case err != nil:
		// No answer at all, whatever broke underneath: the vendor's agent
		// answers 500 with its error code.
		return nil, &policyError{status: http.StatusInternalServerError, call: what, err: err, noAnswer: true}
	case resp == nil:
		return nil, &policyError{status: http.StatusInternalServerError, call: what, err: errors.New("no response and no error")}
	case resp.GetResult() == tlipb.Result_NOCONNECTION, resp.GetResult() == tlipb.Result_TIMEOUT:
		return nil, &policyError{status: http.StatusInternalServerError, call: what, err: resultError(resp), noAnswer: true}
	}
	return resp, nil
}

func resultError(resp *tlipb.Response) error {
	if m := resp.GetMessage(); m != "" {
		return fmt.Errorf("%s: %s", resp.GetResult(), m)
	}
	return errors.New(resp.GetResult().String())
}

// unexpected covers FAILURE and any result the call does not define.
func unexpected(call string, resp *tlipb.Response) error {
	return &policyError{status: http.StatusInternalServerError, call: call, err: resultError(resp)}
}

// fail answers a request the agent could not decide. It never lets the
// request through: an agent that fails open is no agent.
func (a *Agent) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, call := http.StatusInternalServerError, ""
	var pe *policyError
	noAnswer := false
	if errors.As(err, &pe) {
		status, call, noAnswer = pe.status, pe.call, pe.noAnswer
	}
	d := pageData{Title: fmt.Sprintf("%d %s", status, http.StatusText(status)), Call: call, Unavailable: noAnswer}
	if noAnswer {
		d.Code, d.Message = agentError(call)
	}
	switch {
	case r.Context().Err() != nil:
		// The browser went away; its cancellation is not a server fault.
		a.log.Debug().Err(err).Msg("Request abandoned by the client")
	case noAnswer:
		// The vendor's agent log line: the code, what failed and why,
		// and what an administrator looks at next.
		a.c.errors.Add(1)
		ev := a.log.Error().Err(err).Str("method", r.Method).Str("resource", r.URL.Path).Int("status", status).Str("code", d.Code)
		// The error goes in its field (the human format appends it), not in
		// the message: it may run over several lines, one per server.
		ev.Msgf("[%s] %s %s (HTTP %d)%s", d.Code, d.Message[:len(d.Message)-1], call, status, pool.LogCause(ev, err))
	default:
		a.c.errors.Add(1)
		a.log.Error().Err(err).Str("method", r.Method).Str("resource", r.URL.Path).Int("status", status).
			Msgf("Policy Server request failed for %s %s (HTTP %d)", r.Method, r.URL.Path, status)
	}
	a.page(w, status, "error", d)
}

func (a *Agent) badRequest(w http.ResponseWriter, r *http.Request, what string, err error) {
	a.c.badRequests.Add(1)
	a.log.Info().Err(err).Str("method", r.Method).Str("uri", r.RequestURI).Msgf("Refused a bad request: %s %s", r.Method, r.RequestURI)
	a.page(w, http.StatusBadRequest, "bad", pageData{Title: "400 Bad Request", Message: what + ": " + err.Error()})
}

// challenge asks the browser for credentials the realm's way.
func (a *Agent) challenge(w http.ResponseWriter, r *http.Request, res resourceInfo, clearCookie bool) {
	a.c.challenges.Add(1)
	if clearCookie {
		clearSessionCookie(w, r)
	}
	w.Header().Set("Cache-Control", "no-store")
	if res.scheme == schemeForms {
		http.Redirect(w, r, loginRedirect(res.loginURL, r.URL.RequestURI()), http.StatusFound)
		return
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="`+quoteRealm(res.realm)+`"`)
	a.page(w, http.StatusUnauthorized, "challenge", pageData{Title: "401 Unauthorized", Realm: res.realm, Method: r.Method, Resource: r.URL.Path})
}

// loginRedirect builds the form's URL with the page to come back to. A
// login URL that does not parse falls back to the agent's own form rather
// than leaving the user nowhere.
func loginRedirect(loginURL, target string) string {
	if loginURL == "" {
		loginURL = DefaultLoginURL
	}
	u, err := url.Parse(loginURL)
	if err != nil {
		u, _ = url.Parse(DefaultLoginURL)
	}
	q := u.Query()
	q.Set("TARGET", target)
	u.RawQuery = q.Encode()
	return u.String()
}

// quoteRealm escapes a realm name for a quoted-string (RFC 9110 5.6.4).
func quoteRealm(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func sessionToken(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

func setSessionCookie(w http.ResponseWriter, r *http.Request, token string) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: r.TLS != nil})
}

func clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil})
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// counters are the agent's statistics, updated without locks.
type counters struct {
	requests, isProtectedSent, loginSent, authorizeSent, logoutSent atomic.Int64
	resourceHits, resourceMisses, sessionHits, sessionMisses        atomic.Int64
	challenges, denials, errors, badRequests, loginFailures         atomic.Int64
	logouts, flushes                                                atomic.Int64
}

// Stats are the agent's counters at one moment, for status pages, tests
// and benchmarks.
type Stats struct {
	Requests        int64 // every request the agent saw
	IsProtectedSent int64
	LoginSent       int64
	AuthorizeSent   int64
	LogoutSent      int64

	ResourceCacheHits   int64
	ResourceCacheMisses int64 // lookups of an enabled cache that went to the server
	ResourceCacheSize   int   // entries held now
	SessionCacheHits    int64
	SessionCacheMisses  int64
	SessionCacheSize    int

	Challenges    int64 // 401s and redirects to a login form
	Denials       int64 // 403s
	LoginFailures int64 // Login answered FAILURE
	Errors        int64 // 500s and 503s: the Policy Server failed the agent
	BadRequests   int64 // 400s: bad URLs, bad TARGETs, bad forms
	Logouts       int64
	Flushes       int64 // management flushes applied
}

// Stats returns the counters and cache sizes.
func (a *Agent) Stats() Stats {
	c := &a.c
	return Stats{
		Requests:            c.requests.Load(),
		IsProtectedSent:     c.isProtectedSent.Load(),
		LoginSent:           c.loginSent.Load(),
		AuthorizeSent:       c.authorizeSent.Load(),
		LogoutSent:          c.logoutSent.Load(),
		ResourceCacheHits:   c.resourceHits.Load(),
		ResourceCacheMisses: c.resourceMisses.Load(),
		ResourceCacheSize:   a.resources.Len(),
		SessionCacheHits:    c.sessionHits.Load(),
		SessionCacheMisses:  c.sessionMisses.Load(),
		SessionCacheSize:    a.decisions.Len(),
		Challenges:          c.challenges.Load(),
		Denials:             c.denials.Load(),
		LoginFailures:       c.loginFailures.Load(),
		Errors:              c.errors.Load(),
		BadRequests:         c.badRequests.Load(),
		Logouts:             c.logouts.Load(),
		Flushes:             c.flushes.Load(),
	}
}
