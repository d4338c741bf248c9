package hla

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// checkPath refuses URLs whose meaning depends on who decodes or normalises
// them (the vendor's BadUrlChars). The agent asks the Policy Server about
// one spelling of the path; if the application could read another
// ("/public/../protected/", "/protected%2Fadmin/", a doubly encoded "%252F"
// that a second decoding turns into a slash), a request could be judged
// under one realm and served from another.
func checkPath(path, escaped string) error {
	if path == "" || path[0] != '/' {
		return errors.New("the path does not start with /")
	}
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c < 0x20 || c == 0x7f:
			return errors.New("the path has a control character")
		case c == '\\':
			return errors.New("the path has a backslash")
		}
	}
	switch {
	case strings.Contains(path, "//"):
		return errors.New("the path has an empty segment (//)")
	case strings.Contains(path, "/./"), strings.Contains(path, "/../"),
		strings.HasSuffix(path, "/."), strings.HasSuffix(path, "/.."):
		return errors.New("the path has a . or .. segment")
	}
	for i := 0; i+2 < len(escaped); i++ {
		if escaped[i] != '%' {
			continue
		}
		switch strings.ToLower(escaped[i+1 : i+3]) {
		case "2f", "5c":
			return errors.New("the path has an encoded slash or backslash")
		case "25":
			return errors.New("the path has an encoded percent sign")
		}
	}
	return nil
}

// checkTarget accepts a TARGET only when it is a path on this site: a
// login form that redirected anywhere it was told would be an open
// redirect, a phisher's tool. It returns the path to ask IsProtected
// about and the URL to redirect to.
func checkTarget(target string) (path, location string, err error) {
	switch {
	case target == "":
		return "", "", errors.New("no TARGET: the login form is reached by a redirect from a protected page")
	case target[0] != '/':
		return "", "", errors.New("TARGET must be a path on this site, starting with /")
	case len(target) > 1 && (target[1] == '/' || target[1] == '\\'):
		// Browsers read "//host" and "/\host" as another host.
		return "", "", errors.New("TARGET must be a path on this site, not another host")
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return "", "", errors.New("TARGET has a control character or a backslash")
		}
	}
	u, err := url.Parse(target)
	if err != nil {
		return "", "", errors.New("TARGET is not a valid URL")
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "", "", errors.New("TARGET must be a path on this site, not another host")
	}
	if err := checkPath(u.Path, u.EscapedPath()); err != nil {
		return "", "", errors.New("TARGET: " + err.Error())
	}
	return u.Path, u.RequestURI(), nil
}

// isSMHeader is true for SM_USER and its kin in any case, and for the
// hyphenated spelling too: CGI gateways (PHP, mod_cgi) turn both SM-USER
// and SM_USER into HTTP_SM_USER, so a client could forge the one to pass
// as the other.
func isSMHeader(k string) bool {
	return len(k) >= 3 && (k[0]|0x20) == 's' && (k[1]|0x20) == 'm' && (k[2] == '_' || k[2] == '-')
}

func hasSMHeader(h http.Header) bool {
	for k := range h {
		if isSMHeader(k) {
			return true
		}
	}
	return false
}

// sameHeader compares header names the way a CGI gateway would: case and
// the difference between '-' and '_' do not count.
func sameHeader(x, y string) bool {
	if len(x) != len(y) {
		return false
	}
	for i := 0; i < len(x); i++ {
		a, b := x[i], y[i]
		if a == '-' {
			a = '_'
		}
		if b == '-' {
			b = '_'
		}
		if a != b && (a|0x20 != b|0x20 || a|0x20 < 'a' || a|0x20 > 'z') {
			return false
		}
	}
	return true
}

// stripHeaders looks at every key rather than the canonical one alone: a
// map filled by hand may hold spellings that Header.Del would not find.
func stripHeaders(h http.Header, drop func(string) bool) {
	for k := range h {
		if drop(k) {
			delete(h, k)
		}
	}
}

func isBasicAuth(v string) bool {
	return len(v) >= 6 && strings.EqualFold(v[:6], "basic ")
}

// validHeaderName checks the RFC 9110 token syntax.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
