package policyserver

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Header is a response header the agent adds to the request it lets
// through (SM_USER and the policies' responses).
type Header struct {
	Name  string
	Value string
}

// Decision is the answer to Authorize.
type Decision struct {
	Allowed bool
	Headers []Header // when allowed: SM_USER, then the matching policies' responses
	Policy  string   // the deciding policy: the deny, or the first allow
	Reason  string   // for logs
	Realm   string
	User    string
	// Token, when not empty, replaces the session token: its idle deadline
	// was moved forward (see SessionRefreshPeriod).
	Token string
}

// IsProtected finds the realm of an agent that covers a resource: the one
// with the longest matching resource_prefix. A resource no realm covers, or
// whose realm says protected: false, is not protected. The action does not
// matter here, as with the vendor: realms protect every action and rules
// pick actions at Authorize.
func (s *Store) IsProtected(agentName, resource, action string) (Realm, bool, error) {
	a := s.agents[agentName]
	if a == nil {
		return Realm{}, false, fmt.Errorf("%w %q", ErrUnknownAgent, agentName)
	}
	if err := checkResource(resource); err != nil {
		return Realm{}, false, err
	}
	r := a.realmFor(resource)
	if r == nil {
		return Realm{}, false, nil
	}
	return r.Realm, r.Protected, nil
}

func (a *agent) realmFor(resource string) *realm {
	for _, r := range a.realms {
		if strings.HasPrefix(resource, r.ResourcePrefix) {
			return r
		}
	}
	return nil
}

// checkResource refuses paths whose realm depends on how they are
// normalised: "/public/../protected/x" starts with the public prefix but a
// web server serves it from /protected/. The agent should have normalised
// (the vendor's BadUrlChars); refusing here keeps a sloppy agent from
// failing open.
func checkResource(resource string) error {
	path := resource
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch {
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("%w %q: does not start with /", ErrBadResource, resource)
	case strings.Contains(path, "/./"), strings.Contains(path, "/../"),
		strings.HasSuffix(path, "/."), strings.HasSuffix(path, "/.."):
		return fmt.Errorf("%w %q: has a . or .. segment", ErrBadResource, resource)
	case strings.Contains(path, "//"), strings.ContainsAny(path, "\\\x00"):
		return fmt.Errorf("%w %q: has // or a backslash or NUL", ErrBadResource, resource)
	}
	return nil
}

// Authorize checks a session token and decides whether its user may
// perform action on resource. A matching deny policy wins over any allow;
// without a matching allow policy the answer is no. An error means the
// token or the request is bad, as opposed to a user who is not allowed.
func (s *Store) Authorize(agentName, token, resource, action string, now time.Time) (Decision, error) {
	a := s.agents[agentName]
	if a == nil {
		return Decision{}, fmt.Errorf("%w %q", ErrUnknownAgent, agentName)
	}
	if err := checkResource(resource); err != nil {
		return Decision{}, err
	}
	t := now.Unix()
	ti, err := s.checkToken(a, token, t)
	if err != nil {
		return Decision{}, err
	}
	u := ti.user
	d := Decision{User: u.name, Token: s.refreshed(ti, t)}
	r := a.realmFor(resource)
	if r == nil || !r.Protected {
		d.Allowed = true
		d.Reason = "resource is not protected"
		return d, nil
	}
	d.Realm = r.Name

	// The session may come from another realm of the same agent: single
	// sign-on across realms, as the vendor does for schemes of equal
	// protection level. The resource's realm decides.
	var buf [8]*policy
	allow := buf[:0]
	for _, rl := range r.rules {
		if !rl.matches(resource, action) {
			continue
		}
		for _, p := range rl.policies {
			if !p.appliesTo(u) {
				continue
			}
			if !p.allow {
				d.Policy, d.Reason = p.name, p.reason
				return d, nil
			}
			if !slices.Contains(allow, p) {
				allow = append(allow, p)
			}
		}
	}
	if len(allow) == 0 {
		d.Reason = fmt.Sprintf("no policy allows %s to %s %s", u.name, action, resource)
		return d, nil
	}
	// Rules are visited in file order, policies are not: sort them so the
	// headers and the named policy follow the file.
	slices.SortFunc(allow, func(x, y *policy) int { return x.index - y.index })
	d.Allowed = true
	d.Policy, d.Reason = allow[0].name, allow[0].reason
	n := 1
	for _, p := range allow {
		n += len(p.responses)
	}
	d.Headers = make([]Header, 1, n)
	d.Headers[0] = Header{Name: "SM_USER", Value: u.name}
	// A response may override the built-in SM_USER once; for any other
	// header the first policy in the file that sets it wins.
	smUserSet := false
	for _, p := range allow {
		for _, resp := range p.responses {
			i := slices.IndexFunc(d.Headers, func(h Header) bool { return strings.EqualFold(h.Name, resp.name) })
			switch {
			case i < 0:
				d.Headers = append(d.Headers, Header{Name: resp.name, Value: resp.tmpl.render(u, r)})
			case i == 0 && !smUserSet:
				d.Headers[0].Value = resp.tmpl.render(u, r)
				smUserSet = true
			}
		}
	}
	return d, nil
}

func (r *rule) matches(resource, action string) bool {
	if r.actions != nil {
		ok := false
		for _, a := range r.actions {
			if strings.EqualFold(a, action) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return globMatch(r.pattern, resource)
}

func (p *policy) appliesTo(u *user) bool {
	if p.anyUser || p.users[u.name] {
		return true
	}
	for _, g := range u.groups {
		if p.groups[g] {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern in which '*' stands for any run of
// characters, '/' included, as in the vendor's rule filters. It
// backtracks only to the last star, so it runs in O(len(p)*len(s)) at
// worst and without allocating.
func globMatch(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// Response templates: %user, %userdn and %realm, %% for a literal %.
type tmplVar uint8

const (
	tmplLiteral tmplVar = iota
	tmplUser
	tmplUserDN
	tmplRealm
)

type segment struct {
	lit string
	v   tmplVar
}

type template []segment

func parseTemplate(s string) (template, error) {
	var t template
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t = append(t, segment{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			i++
			continue
		}
		rest := s[i+1:]
		if strings.HasPrefix(rest, "%") {
			lit.WriteByte('%')
			i += 2
			continue
		}
		end := 0
		for end < len(rest) && isIdentByte(rest[end]) {
			end++
		}
		var v tmplVar
		switch rest[:end] {
		case "user":
			v = tmplUser
		case "userdn":
			v = tmplUserDN
		case "realm":
			v = tmplRealm
		default:
			return nil, fmt.Errorf("unknown variable %%%s in %q: use %%user, %%userdn, %%realm, or %%%% for a literal %%", rest[:end], s)
		}
		flush()
		t = append(t, segment{v: v})
		i += 1 + end
	}
	flush()
	return t, nil
}

func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

func (seg segment) value(u *user, r *realm) string {
	switch seg.v {
	case tmplUser:
		return u.name
	case tmplUserDN:
		return u.dn
	case tmplRealm:
		return r.Name
	}
	return seg.lit
}

func (t template) render(u *user, r *realm) string {
	switch len(t) {
	case 0:
		return ""
	case 1:
		// The usual response is one variable: no new string needed.
		return t[0].value(u, r)
	}
	var b strings.Builder
	for _, seg := range t {
		b.WriteString(seg.value(u, r))
	}
	return b.String()
}
