package hla

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"
)

// section is one part of the built-in site. The realms are the seed
// store's: the site knows nothing of the Policy Server, it only tells a
// learner what protects the page they are looking at.
type section struct {
	title  string
	realm  string
	scheme string
	note   string
}

var (
	homeSection = section{
		title: "Home", realm: "realm.public", scheme: "none: public",
		note: "Anyone may read this page. The agent still asks IsProtected for it (unless the resource cache answers).",
	}
	protectedSection = section{
		title: "Protected area", realm: "realm.protected", scheme: "Basic",
		note: "user1 (staff) may GET and POST here; user2 (contractors) may only GET.",
	}
	adminSection = section{
		title: "Administration", realm: "realm.protected", scheme: "Basic",
		note: "Staff only: user2 (contractors) is denied by policy.contractors.no-admin.",
	}
	formsSection = section{
		title: "Forms area", realm: "realm.forms", scheme: "Forms (login.fcc)",
		note: "Reached through the agent's login form; user1 (staff) may use it.",
	}
	notFoundSection = section{title: "Not found", realm: "realm.public", scheme: "none: public"}
)

type sitePage struct {
	Title, Realm, Scheme, Note string
	Method, URI                string
	Headers                    []siteHeader
	Protected                  bool
}

type siteHeader struct{ Name, Value string }

var siteTemplate = template.Must(template.New("site").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Title}} ({{.Realm}})</title></head>
<body>
<h1>{{.Title}}</h1>
<p>Realm <b>{{.Realm}}</b>, authentication: {{.Scheme}}.</p>
{{if .Note}}<p>{{.Note}}</p>
{{end}}<ul>
<li><a href="/">Home</a> (public)</li>
<li><a href="/protected/">/protected/</a> (Basic)</li>
<li><a href="/protected/admin/">/protected/admin/</a> (Basic, staff only)</li>
<li><a href="/forms/">/forms/</a> (Forms)</li>
<li><a href="/siteminderagent/logout">Log out</a></li>
</ul>
<h2>The request this page received</h2>
<p><code>{{.Method}} {{.URI}}</code></p>
<table border="1" cellpadding="3">
<tr><th>Header</th><th>Value</th></tr>
{{range .Headers}}<tr><td>{{.Name}}</td><td>{{.Value}}</td></tr>
{{end}}</table>
{{if not .Protected}}<p>No SM_USER here: the agent lets public pages through without a user, and removes any SM_* header a client sends.</p>
{{end}}</body></html>
`))

// NewSite is the built-in application: a public home page, the protected,
// admin and forms areas of the seed store, and /health. Every page shows the
// headers it received, so a learner sees what the agent added.
func NewSite() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte("ok"))
	})
	mux.Handle("/", siteHandler(homeSection))
	mux.Handle("/protected/", siteHandler(protectedSection))
	mux.Handle("/protected/admin/", siteHandler(adminSection))
	mux.Handle("/forms/", siteHandler(formsSection))
	return mux
}

func siteHandler(sec section) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Per request: the section the handler was made for is shared by
		// every request, and "/" must stay Home after a 404.
		s, status := sec, http.StatusOK
		// "/" catches every path no other section claims.
		if s == homeSection && r.URL.Path != "/" {
			s, status = notFoundSection, http.StatusNotFound
		}
		p := sitePage{
			Title: s.title, Realm: s.realm, Scheme: s.scheme, Note: s.note,
			Method: r.Method, URI: r.URL.RequestURI(), Protected: s.realm != homeSection.realm,
		}
		for k, vs := range r.Header {
			for _, v := range vs {
				p.Headers = append(p.Headers, siteHeader{displayName(k), v})
			}
		}
		slices.SortStableFunc(p.Headers, func(x, y siteHeader) int { return strings.Compare(x.Name, y.Name) })
		var buf bytes.Buffer
		if err := siteTemplate.Execute(&buf, p); err != nil {
			http.Error(w, "page template failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeHTML(w, status, buf.Bytes())
	})
}

// displayName shows SM_* headers in the vendor's capitals. Go keeps header
// names canonical ("Sm_user"), which is correct but not what a learner
// reading the vendor's documentation looks for.
func displayName(k string) string {
	if isSMHeader(k) {
		return strings.ToUpper(k)
	}
	return k
}

// NewUpstream proxies to an application that expects the SiteMinder
// headers, as the vendor's agent in front of an application server does.
func NewUpstream(target *url.URL) (http.Handler, error) {
	if target == nil {
		return nil, errors.New("upstream: no URL")
	}
	if target.Scheme != "http" && target.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: the scheme must be http or https", target.Redacted())
	}
	if target.Host == "" {
		return nil, fmt.Errorf("upstream %q: no host", target.Redacted())
	}
	// A transport of its own: the default one follows HTTP_PROXY, and the
	// agent's upstream is next to it, never behind the learner's proxy.
	var tr *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	} else {
		tr = &http.Transport{IdleConnTimeout: 90 * time.Second}
	}
	tr.Proxy = nil
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// Send the vendor's spelling on the wire: HTTP does not care,
			// but a learner's packet capture and a naive application do.
			for k, v := range pr.Out.Header {
				if isSMHeader(k) {
					if up := strings.ToUpper(k); up != k {
						delete(pr.Out.Header, k)
						pr.Out.Header[up] = v
					}
				}
			}
		},
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "502 Bad Gateway: the application at %s did not answer\n", target.Redacted())
		},
	}, nil
}
