package hla

import (
	"net/http"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// maxFormBytes bounds a login POST: a user name and a password do not need
// more, and an unbounded body would let anyone fill the worker's memory.
const maxFormBytes = 16 << 10

// serveLoginForm is the forms credential collector (the vendor's .fcc).
// GET shows the form for the realm that protects TARGET; POST logs in to
// that realm and sends the browser back to TARGET.
//
// A failed login shows the form again with status 200, not 401: a 401 must
// carry a WWW-Authenticate challenge (RFC 9110 15.5.2), and a Basic one
// would make the browser open its password dialog over the form.
func (a *Agent) serveLoginForm(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			a.badRequest(w, r, "unreadable login form", err)
			return
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		a.page(w, http.StatusMethodNotAllowed, "bad", pageData{Title: "405 Method Not Allowed", Message: "the login form takes GET and POST"})
		return
	}
	tpath, location, err := checkTarget(r.FormValue("TARGET"))
	if err != nil {
		a.badRequest(w, r, "bad TARGET", err)
		return
	}
	// The browser comes back to TARGET with a GET, so that is what the
	// realm is looked up for.
	res, err := a.isProtected(r.Context(), http.MethodGet, tpath)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if !res.protected {
		http.Redirect(w, r, location, http.StatusFound)
		return
	}
	form := pageData{Title: "Log in to " + res.realm, Realm: res.realm, Target: location, Action: r.URL.Path}
	if r.Method != http.MethodPost {
		a.loginForm(w, form)
		return
	}
	user := r.PostFormValue("USER")
	if user == "" {
		form.Error = "Enter a user name."
		a.loginForm(w, form)
		return
	}
	token, ok, err := a.login(r.Context(), r, res.realm, user, r.PostFormValue("PASSWORD"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !ok {
		form.User = user
		form.Error = "Login failed: wrong user name or password."
		a.loginForm(w, form)
		return
	}
	setSessionCookie(w, r, token)
	http.Redirect(w, r, location, http.StatusFound)
}

func (a *Agent) loginForm(w http.ResponseWriter, form pageData) {
	// A form inside someone else's frame is a clickjacking target.
	w.Header().Set("X-Frame-Options", "DENY")
	a.page(w, http.StatusOK, "login", form)
}

// serveLogout ends the session on the Policy Server and in the browser. The
// cookie is cleared even when the server cannot be told: the user asked to
// leave, and the browser at least forgets the session.
func (a *Agent) serveLogout(w http.ResponseWriter, r *http.Request) {
	a.c.logouts.Add(1)
	token := sessionToken(r)
	clearSessionCookie(w, r)
	w.Header().Set("Cache-Control", "no-store")
	if token == "" {
		a.page(w, http.StatusOK, "loggedout", pageData{Title: "Logged out", Message: "There was no session to log out."})
		return
	}
	a.forgetSession(token)
	a.c.logoutSent.Add(1)
	const call = "Logout"
	resp, err := a.call(r.Context(), call, &tlipb.Request{Body: &tlipb.Request_Logout{Logout: &tlipb.LogoutRequest{
		AgentName: a.cfg.AgentName, SessionToken: token,
	}}})
	if err == nil && resp.GetResult() != tlipb.Result_SUCCESS {
		err = unexpected(call, resp)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info().Msg("Session logged out")
	a.page(w, http.StatusOK, "loggedout", pageData{Title: "Logged out", Message: "Your session has ended."})
}
