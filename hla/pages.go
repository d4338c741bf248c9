package hla

import (
	"bytes"
	"html/template"
	"net/http"
	"strconv"
)

// pageData feeds the agent's own pages. html/template escapes every field:
// realm names, paths and user names all come from outside.
type pageData struct {
	Title       string
	Realm       string
	Method      string
	Resource    string
	Call        string
	Unavailable bool
	Message     string
	// Code is the agent's error code of an error page ("20-0004"),
	// shown with Message as the vendor's agent shows it.
	Code string
	// login form
	Action string
	Target string
	User   string
	Error  string
}

var agentPages = template.Must(template.New("").Parse(`
{{define "head"}}<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body>
<h1>{{.Title}}</h1>
{{end}}
{{define "foot"}}<p><a href="/">Home</a></p>
<p><small>agentlab Web Agent</small></p>
</body></html>
{{end}}

{{define "challenge"}}{{template "head" .}}<p>{{.Method}} {{.Resource}} is protected by realm <b>{{.Realm}}</b> (Basic authentication).
Your browser should ask for a user name and a password.</p>
{{template "foot" .}}{{end}}

{{define "denied"}}{{template "head" .}}<p>You are not allowed to {{.Method}} <b>{{.Resource}}</b> (realm {{.Realm}}).</p>
<p><a href="/siteminderagent/logout">Log out</a> to try as another user.</p>
{{template "foot" .}}{{end}}

{{define "error"}}{{template "head" .}}{{if .Unavailable}}<p>Error: [{{.Code}}] {{.Message}}</p>
<p>No Policy Server answered, so the agent cannot decide about this request.</p>
{{else}}<p>The Policy Server could not decide about this request.</p>
{{end}}{{if .Call}}<p>Request: <code>{{.Call}}</code>. The agent log has the details.</p>
{{end}}{{template "foot" .}}{{end}}

{{define "bad"}}{{template "head" .}}<p>{{.Message}}</p>
{{template "foot" .}}{{end}}

{{define "loggedout"}}{{template "head" .}}<p>{{.Message}}</p>
{{template "foot" .}}{{end}}

{{define "login"}}{{template "head" .}}<p>Realm <b>{{.Realm}}</b> protects <code>{{.Target}}</code>: log in to continue.</p>
{{if .Error}}<p style="color:#b00"><b>{{.Error}}</b></p>
{{end}}<form method="post" action="{{.Action}}">
<p><label>User <input name="USER" value="{{.User}}" autocomplete="username" autofocus></label></p>
<p><label>Password <input name="PASSWORD" type="password" autocomplete="current-password"></label></p>
<input type="hidden" name="TARGET" value="{{.Target}}">
<p><button type="submit">Log in</button></p>
</form>
{{template "foot" .}}{{end}}
`))

// page renders into a buffer first, so that a template error cannot leave
// a half-written page behind a 200.
func (a *Agent) page(w http.ResponseWriter, status int, name string, d pageData) {
	var buf bytes.Buffer
	if err := agentPages.ExecuteTemplate(&buf, name, d); err != nil {
		a.log.Error().Err(err).Str("page", name).Msg("Page template failed")
		http.Error(w, http.StatusText(status), status)
		return
	}
	writeHTML(w, status, buf.Bytes())
}

func writeHTML(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}
