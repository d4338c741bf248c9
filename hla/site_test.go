package hla

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

func TestSite(t *testing.T) {
	tests := []struct {
		path       string
		wantStatus int
		wantBody   []string
	}{
		{"/", 200, []string{"<title>Home (realm.public)</title>", `href="/protected/"`, `href="/protected/admin/"`, `href="/forms/"`, `href="/siteminderagent/logout"`}},
		{"/protected/", 200, []string{"<title>Protected area (realm.protected)</title>", "Basic"}},
		{"/protected/page.html", 200, []string{"<title>Protected area (realm.protected)</title>", "GET /protected/page.html"}},
		{"/protected/admin/", 200, []string{"<title>Administration (realm.protected)</title>"}},
		{"/forms/", 200, []string{"<title>Forms area (realm.forms)</title>"}},
		{"/nowhere", 404, []string{"Not found"}},
	}
	site := NewSite()
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			site.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d", w.Code, tt.wantStatus)
			}
			for _, s := range tt.wantBody {
				if !strings.Contains(w.Body.String(), s) {
					t.Errorf("the page does not have %q:\n%s", s, w.Body)
				}
			}
		})
	}
}

// One site serves every request of a web server: a 404 must leave "/"
// Home and the next unknown path a 404, in sequence and at once.
func TestSiteAfterNotFound(t *testing.T) {
	check := func(site http.Handler, path string) error {
		w := httptest.NewRecorder()
		site.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		code, body := w.Code, w.Body.String()
		switch {
		case path == "/" && (code != 200 || !strings.Contains(body, "<title>Home (realm.public)</title>")):
			return fmt.Errorf("/: %d, want 200 and the Home page", code)
		case path != "/" && (code != 404 || !strings.Contains(body, "Not found")):
			return fmt.Errorf("%s: %d, want 404 Not found", path, code)
		}
		return nil
	}
	t.Run("in sequence", func(t *testing.T) {
		site := NewSite()
		for _, path := range []string{"/nothere", "/", "/nothere2", "/"} {
			if err := check(site, path); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("at once", func(t *testing.T) {
		site := NewSite()
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Go(func() {
				path := "/"
				if i%2 == 0 {
					path = fmt.Sprintf("/missing-%d", i)
				}
				if err := check(site, path); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestSiteShowsHeadersEscaped(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/protected/", nil)
	r.Header.Set("SM_USER", "user1")
	r.Header.Set("X-Evil", `<script>alert("x")</script>`)
	w := httptest.NewRecorder()
	NewSite().ServeHTTP(w, r)
	body := w.Body.String()
	if !strings.Contains(body, "<td>SM_USER</td><td>user1</td>") {
		t.Errorf("SM_USER is not shown in the vendor's spelling:\n%s", body)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("a header value is not escaped:\n%s", body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestHealth(t *testing.T) {
	w := httptest.NewRecorder()
	NewSite().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/health", nil))
	if w.Code != 200 || w.Body.String() != "ok" {
		t.Errorf("/health: %d %q, want 200 ok", w.Code, w.Body)
	}
}

func TestNewUpstreamChecksURL(t *testing.T) {
	for _, raw := range []string{"", "ftp://app.example/", "http://", "/relative"} {
		u, _ := url.Parse(raw)
		if raw == "" {
			u = nil
		}
		if _, err := NewUpstream(u); err == nil {
			t.Errorf("NewUpstream(%q): no error", raw)
		}
	}
}

// TestUpstreamSpelling: the application gets SM_USER in the vendor's
// capitals on the wire. A Go server would canonicalise the name before a
// handler saw it, so the "application" here reads the raw request.
func TestUpstreamSpelling(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			raw <- ""
			return
		}
		defer c.Close()
		var b strings.Builder
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			b.WriteString(line)
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		raw <- b.String()
	}()
	up, err := NewUpstream(&url.URL{Scheme: "http", Host: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer up.(*httputil.ReverseProxy).Transport.(*http.Transport).CloseIdleConnections()
	rg := newRig(t, cacheACO(0, 0))
	rg.agent.cfg.Next = up
	if w := rg.do(req{target: "/protected/", user: "user1", password: "Passw0rd1"}); w.Code != 200 || w.Body.String() != "ok" {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	got := <-raw
	for _, want := range []string{"\r\nSM_USER: user1\r\n", "\r\nSM_USERDN: " + dnUser1 + "\r\n", "\r\nX-Forwarded-For: "} {
		if !strings.Contains(got, want) {
			t.Errorf("the application's request lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Authorization") {
		t.Errorf("the Basic credentials reached the application:\n%s", got)
	}
}
