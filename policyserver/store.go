package policyserver

// The policy store's model: the objects a Policy Server serves (HCOs, ACOs,
// agents, trusted hosts) and the ones it decides with (users, groups,
// realms, rules, policies), built from a StoreSpec and checked as a whole.
// Nothing here knows YAML: storefile.go reads a file into a StoreSpec and
// places the problems found here at their line and column. Everything built
// is immutable after NewStore returns, so the request path reads it without
// locks; the little that changes at run time (registrations, revoked
// sessions, the management queue) has its own synchronisation.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/agentlab/conf"
)

// Realm.AuthScheme values: an HTTP Basic 401, or a redirect to a login
// form (the vendor's .fcc). Plain strings, as they travel in the protocol.
const (
	AuthBasic = "basic"
	AuthForms = "forms"
)

// Defaults for fields a store may leave out.
const (
	DefaultLoginURL           = "/siteminderagent/forms/login.fcc"
	DefaultSessionIdleTimeout = conf.Seconds(3600 * time.Second)
	DefaultSessionMaxTimeout  = conf.Seconds(7200 * time.Second)
	defaultUserDN             = "uid=%s,ou=People,dc=shared,dc=lab"
)

// Errors a caller may want to tell apart; the returned errors wrap them with
// the details for the server log.
var (
	ErrUnknownAgent   = errors.New("unknown agent")
	ErrUnknownRealm   = errors.New("unknown realm")
	ErrUnknownUser    = errors.New("unknown user")
	ErrBadPassword    = errors.New("bad password")
	ErrNotProtected   = errors.New("realm is not protected")
	ErrBadResource    = errors.New("bad resource")
	ErrBadToken       = errors.New("invalid session token")
	ErrSessionExpired = errors.New("session expired")
	ErrSessionRevoked = errors.New("session logged out")
	ErrUnknownHCO     = errors.New("unknown host configuration object")
	ErrHostExists     = errors.New("trusted host already exists")
	ErrBadAdmin       = errors.New("invalid administrator credentials")
	ErrBadHostName    = errors.New("bad trusted host name")
	ErrUnknownCommand = errors.New("unknown management command")
)

// Agent is an agent object: the name an agent reports (the ACO's
// DefaultAgentName) and the ACO it belongs with.
type Agent struct {
	Name        string `yaml:"name"`
	ACO         string `yaml:"aco"`
	Description string `yaml:"description"`
}

// Realm is a protected (or explicitly unprotected) part of an agent's URL
// space, found by the longest matching ResourcePrefix.
type Realm struct {
	Name string
	// OID imitates the vendor's object ids (realms are class 06), derived
	// from the name so that every server loading the store agrees on it.
	OID            string
	Agent          string
	ResourcePrefix string
	Protected      bool
	AuthScheme     string // AuthBasic or AuthForms
	LoginURL       string // forms only
	IdleTimeout    conf.Seconds
	MaxTimeout     conf.Seconds
}

// Store is a parsed policy store. Its methods are safe for concurrent use.
type Store struct {
	name       string
	admin      *admin
	sessionKey []byte

	hcos        map[string]conf.HCO
	acos        map[string]conf.ACO
	agents      map[string]*agent
	agentNames  []string // file order, for management fan-out
	users       map[string]*user
	realms      map[string]*realm
	policies    []*policy
	staticHosts map[string]TrustedHost
	dir         Directory

	mgmt     *ManagementQueue
	scratch  sync.Pool // *tokenScratch
	sessions sessionState
	reg      registrations
}

type admin struct {
	name string
	hash passwordHash
}

type agent struct {
	Agent
	realms []*realm // longest resource prefix first
}

type user struct {
	name   string
	dn     string
	groups []string
	hash   passwordHash
}

type realm struct {
	Realm
	agent *agent
	rules []*rule
}

type rule struct {
	name     string
	realm    *realm
	pattern  string   // realm prefix + rule resource, '*' matches anything
	actions  []string // upper case; nil: every action
	policies []*policy
}

type policy struct {
	name      string
	index     int
	allow     bool
	anyUser   bool
	users     map[string]bool
	groups    map[string]bool
	responses []response
	reason    string // "allowed by policy X" or "denied by policy X", built once
}

type response struct {
	name string
	tmpl template
}

// StoreSpec is a policy store as its author writes it: the sections of
// the store file (docs/store.md), in file order. NewStore checks it and
// fills in the defaults; the yaml keys are also the words its errors use.
type StoreSpec struct {
	Admin        *AdminSpec        `yaml:"admin"`
	SessionKey   string            `yaml:"session_key"`
	TrustedHosts []TrustedHostSpec `yaml:"trusted_hosts"`
	HCOs         []conf.HCO        `yaml:"hcos"`
	ACOs         []conf.ACO        `yaml:"acos"`
	Agents       []Agent           `yaml:"agents"`
	Groups       []GroupSpec       `yaml:"groups"`
	Users        []UserSpec        `yaml:"users"`
	Realms       []RealmSpec       `yaml:"realms"`
	Rules        []RuleSpec        `yaml:"rules"`
	Policies     []PolicySpec      `yaml:"policies"`
	Directory    *DirectorySpec    `yaml:"directory"`
}

// AdminSpec is the administrator registration needs.
type AdminSpec struct {
	Name         string `yaml:"name"`
	PasswordHash string `yaml:"password_hash"`
}

// TrustedHostSpec is a host of the store's trusted_hosts; Secret is
// {PLAIN}text or hex digits.
type TrustedHostSpec struct {
	Name   string `yaml:"name"`
	Secret string `yaml:"secret"`
	HCO    string `yaml:"hco"`
}

type GroupSpec struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
}

type UserSpec struct {
	Name         string   `yaml:"name"`
	PasswordHash string   `yaml:"password_hash"`
	DN           string   `yaml:"dn"` // "": defaultUserDN
	Groups       []string `yaml:"groups"`
}

// RealmSpec is a realm as written; nil pointers take the defaults
// (protected, DefaultSessionIdleTimeout, DefaultSessionMaxTimeout).
type RealmSpec struct {
	Name           string        `yaml:"name"`
	Agent          string        `yaml:"agent"`
	ResourcePrefix string        `yaml:"resource_prefix"`
	Protected      *bool         `yaml:"protected"`
	AuthScheme     string        `yaml:"auth_scheme"`
	LoginURL       string        `yaml:"login_url"`
	IdleTimeout    *conf.Seconds `yaml:"idle_timeout"`
	MaxTimeout     *conf.Seconds `yaml:"max_timeout"`
	Description    string        `yaml:"description"`
}

type RuleSpec struct {
	Name     string   `yaml:"name"`
	Realm    string   `yaml:"realm"`
	Resource string   `yaml:"resource"`
	Actions  []string `yaml:"actions"`
}

// PolicySpec is a policy as written; Allow nil means allow.
type PolicySpec struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Users       []string `yaml:"users"`
	Groups      []string `yaml:"groups"`
	Rules       []string `yaml:"rules"`
	Allow       *bool    `yaml:"allow"`
	Responses   Headers  `yaml:"responses"`
}

// Headers are a policy's responses in the order written (the first policy
// to set a header wins, so the order is part of the meaning); each Value is
// a template (%user, %userdn, %realm, %%).
type Headers []Header

// Where is the place of a problem in a StoreSpec: a section, an item of
// it, a key of the item, an element of that key's list (or entry of its
// mapping). Item and Elem are -1 when the place is above them. The file
// format turns a Where into a line and column (storefile.go).
type Where struct {
	Section string
	Item    int
	Key     string
	Elem    int
}

func (w Where) String() string {
	s := w.Section
	if w.Item >= 0 {
		s += fmt.Sprintf("[%d]", w.Item)
	}
	if w.Key != "" {
		s += "." + w.Key
	}
	if w.Elem >= 0 {
		s += fmt.Sprintf("[%d]", w.Elem)
	}
	return s
}

// Problem is one thing wrong with a StoreSpec. NewStore's error joins
// every Problem it found, so that one run shows the author all of them.
type Problem struct {
	At  Where
	Msg string
	// First, for a duplicate, is where the name was first given.
	First *Where
}

// Error says the problem with its place in the spec; a store read from a
// file says lines instead (storefile.go).
func (p *Problem) Error() string {
	msg := p.Msg
	if p.First != nil {
		msg += fmt.Sprintf(" (first at %s)", p.First)
	}
	if p.At.Section == "" {
		return msg
	}
	return p.At.String() + ": " + msg
}

// builder collects the problems of a spec while it builds the store.
type builder struct {
	probs []*Problem
}

func (b *builder) errf(at Where, format string, args ...any) {
	b.probs = append(b.probs, &Problem{At: at, Msg: fmt.Sprintf(format, args...)})
}

// at is the place of key of item i of section (i < 0: of the section).
func at(section string, i int, key string) Where {
	return Where{Section: section, Item: i, Key: key, Elem: -1}
}

// elem is the place of element j of key's list in item i of section.
func elem(section string, i int, key string, j int) Where {
	return Where{Section: section, Item: i, Key: key, Elem: j}
}

// NewStore checks spec and builds the store it describes. The error joins
// one *Problem per thing wrong.
func NewStore(spec *StoreSpec) (*Store, error) {
	var b builder
	s := b.build(spec)
	if len(b.probs) > 0 {
		errs := make([]error, len(b.probs))
		for i, p := range b.probs {
			errs[i] = p
		}
		return nil, errors.Join(errs...)
	}
	s.mgmt = NewManagementQueue(s.agentNames, DefaultManagementQueueLimit)
	key := s.sessionKey
	s.scratch.New = func() any { return &tokenScratch{mac: hmac.New(sha256.New, key)} }
	s.sessions.revoked = make(map[[tokenIDLen]byte]int64)
	s.reg.snap.Store(&regSnapshot{hosts: map[string]regHost{}})
	return s, nil
}

// checkName rejects names that could not travel in a session token or a
// log line unambiguously.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("has no name")
	case len(s) > 255:
		return errors.New("name is longer than 255 bytes")
	case strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("name %q has spaces or control characters", s)
	}
	return nil
}

// names checks the name of every element of a section and reports duplicates.
func (b *builder) names(section, what string, n int, name func(int) string) []bool {
	ok := make([]bool, n)
	seen := map[string]int{}
	for i := range n {
		nm := name(i)
		if err := checkName(nm); err != nil {
			b.errf(at(section, i, "name"), "%s %d %v", what, i+1, err)
			continue
		}
		if first, dup := seen[nm]; dup {
			first := at(section, first, "name")
			b.probs = append(b.probs, &Problem{At: at(section, i, "name"), Msg: fmt.Sprintf("duplicate %s %q", what, nm), First: &first})
			continue
		}
		seen[nm] = i
		ok[i] = true
	}
	return ok
}

func splitJoined(err error) []error {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		return u.Unwrap()
	}
	return []error{err}
}

func parseSecret(s string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(s, "{PLAIN}"); ok {
		if rest == "" {
			return nil, errors.New("the {PLAIN} secret is empty")
		}
		return []byte(rest), nil
	}
	if strings.HasPrefix(s, "{") {
		return nil, errors.New("secret must be written {PLAIN}text or as hex digits; encrypted forms such as {RC2} belong in SmHost.conf only")
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("secret must be written {PLAIN}text or as hex digits")
	}
	return b, nil
}

func realmOID(name string) string {
	h := sha256.Sum256([]byte("realm:" + name))
	return fmt.Sprintf("06-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

var actionRE = regexp.MustCompile(`^[A-Z][A-Z0-9_-]*$`)

func (b *builder) build(y *StoreSpec) *Store {
	s := &Store{
		hcos:        map[string]conf.HCO{},
		acos:        map[string]conf.ACO{},
		agents:      map[string]*agent{},
		users:       map[string]*user{},
		realms:      map[string]*realm{},
		staticHosts: map[string]TrustedHost{},
	}
	s.dir = b.buildDirectory(y.Directory)
	line := at("session_key", -1, "")
	switch key, err := hex.DecodeString(y.SessionKey); {
	case y.SessionKey == "":
		b.errf(line, "session_key is missing: it signs session tokens; make one with `openssl rand -hex 32`")
	case err != nil:
		b.errf(line, "session_key must be hex digits: %v", err)
	case len(key) < 16:
		b.errf(line, "session_key must be at least 16 bytes (32 hex digits), got %d", len(key))
	default:
		s.sessionKey = key
	}

	if y.Admin != nil {
		if err := checkName(y.Admin.Name); err != nil {
			b.errf(at("admin", -1, "name"), "admin %v", err)
		}
		h, err := parsePasswordHash(y.Admin.PasswordHash)
		if err != nil {
			b.errf(at("admin", -1, "password_hash"), "admin %q: %v", y.Admin.Name, err)
		} else {
			s.admin = &admin{name: y.Admin.Name, hash: h}
		}
	}

	ok := b.names("hcos", "HCO", len(y.HCOs), func(i int) string { return y.HCOs[i].Name })
	for i, h := range y.HCOs {
		if !ok[i] {
			continue
		}
		if err := h.Validate(); err != nil {
			for _, e := range splitJoined(err) {
				b.errf(at("hcos", i, ""), "%v", e)
			}
		}
		s.hcos[h.Name] = h
	}

	ok = b.names("acos", "ACO", len(y.ACOs), func(i int) string { return y.ACOs[i].Name })
	for i, a := range y.ACOs {
		if !ok[i] {
			continue
		}
		if err := a.Validate(); err != nil {
			for _, e := range splitJoined(err) {
				b.errf(at("acos", i, ""), "%v", e)
			}
		}
		s.acos[a.Name] = a
	}

	ok = b.names("trusted_hosts", "trusted host", len(y.TrustedHosts), func(i int) string { return y.TrustedHosts[i].Name })
	for i, th := range y.TrustedHosts {
		if !ok[i] {
			continue
		}
		secret, err := parseSecret(th.Secret)
		if err != nil {
			b.errf(at("trusted_hosts", i, "secret"), "trusted host %q: %v", th.Name, err)
		}
		if _, known := s.hcos[th.HCO]; !known {
			b.errf(at("trusted_hosts", i, "hco"), "trusted host %q names unknown HCO %q", th.Name, th.HCO)
		}
		s.staticHosts[th.Name] = TrustedHost{Name: th.Name, Secret: secret, HCO: th.HCO}
	}

	ok = b.names("agents", "agent", len(y.Agents), func(i int) string { return y.Agents[i].Name })
	for i, a := range y.Agents {
		if !ok[i] {
			continue
		}
		if _, known := s.acos[a.ACO]; !known {
			b.errf(at("agents", i, "aco"), "agent %q names unknown ACO %q", a.Name, a.ACO)
		}
		s.agents[a.Name] = &agent{Agent: a}
		s.agentNames = append(s.agentNames, a.Name)
	}
	for i, a := range y.ACOs {
		if a.DefaultAgentName != "" && s.agents[a.DefaultAgentName] == nil {
			b.errf(at("acos", i, "default_agent_name"), "ACO %q: default_agent_name %q is not an agent of the store", a.Name, a.DefaultAgentName)
		}
	}

	groups := map[string]bool{}
	ok = b.names("groups", "group", len(y.Groups), func(i int) string { return y.Groups[i].Name })
	for i, g := range y.Groups {
		if ok[i] {
			groups[g.Name] = true
		}
	}

	ok = b.names("users", "user", len(y.Users), func(i int) string { return y.Users[i].Name })
	for i, u := range y.Users {
		if !ok[i] {
			continue
		}
		h, err := parsePasswordHash(u.PasswordHash)
		if err != nil {
			b.errf(at("users", i, "password_hash"), "user %q: %v", u.Name, err)
		}
		for j, g := range u.Groups {
			if !groups[g] {
				b.errf(elem("users", i, "groups", j), "user %q is in unknown group %q", u.Name, g)
			}
		}
		dn := u.DN
		if dn == "" {
			dn = fmt.Sprintf(defaultUserDN, u.Name)
		}
		s.users[u.Name] = &user{name: u.Name, dn: dn, groups: slices.Clone(u.Groups), hash: h}
	}

	b.buildRealms(s, y)
	rules := b.buildRules(s, y)
	b.buildPolicies(s, y, rules, groups)
	return s
}

func (b *builder) buildRealms(s *Store, y *StoreSpec) {
	ok := b.names("realms", "realm", len(y.Realms), func(i int) string { return y.Realms[i].Name })
	for i, yr := range y.Realms {
		if !ok[i] {
			continue
		}
		r := &realm{Realm: Realm{
			Name:           yr.Name,
			OID:            realmOID(yr.Name),
			Agent:          yr.Agent,
			ResourcePrefix: yr.ResourcePrefix,
			Protected:      yr.Protected == nil || *yr.Protected,
			AuthScheme:     yr.AuthScheme,
			LoginURL:       yr.LoginURL,
			IdleTimeout:    DefaultSessionIdleTimeout,
			MaxTimeout:     DefaultSessionMaxTimeout,
		}}
		a := s.agents[yr.Agent]
		if a == nil {
			b.errf(at("realms", i, "agent"), "realm %q names unknown agent %q", yr.Name, yr.Agent)
		}
		if !strings.HasPrefix(yr.ResourcePrefix, "/") {
			b.errf(at("realms", i, "resource_prefix"), "realm %q: resource_prefix %q must start with /", yr.Name, yr.ResourcePrefix)
		}
		switch r.AuthScheme {
		case "":
			r.AuthScheme = AuthBasic
		case AuthBasic, AuthForms:
		default:
			b.errf(at("realms", i, "auth_scheme"), "realm %q: auth_scheme %q is neither basic nor forms", yr.Name, yr.AuthScheme)
		}
		if r.AuthScheme == AuthForms && r.LoginURL == "" {
			r.LoginURL = DefaultLoginURL
		}
		if r.AuthScheme != AuthForms && r.LoginURL != "" {
			b.errf(at("realms", i, "login_url"), "realm %q: login_url is for auth_scheme forms only", yr.Name)
		}
		if yr.IdleTimeout != nil {
			r.IdleTimeout = *yr.IdleTimeout
		}
		if yr.MaxTimeout != nil {
			r.MaxTimeout = *yr.MaxTimeout
		}
		if r.IdleTimeout < conf.Seconds(time.Second) || r.MaxTimeout < conf.Seconds(time.Second) {
			b.errf(at("realms", i, "idle_timeout"), "realm %q: idle_timeout and max_timeout must be at least 1 second", yr.Name)
		}
		if a != nil {
			for _, other := range a.realms {
				if other.ResourcePrefix == r.ResourcePrefix {
					b.errf(at("realms", i, "resource_prefix"), "realm %q has the same resource_prefix %q as realm %q of agent %q", r.Name, r.ResourcePrefix, other.Name, a.Name)
				}
			}
			r.agent = a
			a.realms = append(a.realms, r)
		}
		s.realms[r.Name] = r
	}
	for _, a := range s.agents {
		slices.SortStableFunc(a.realms, func(x, y *realm) int { return len(y.ResourcePrefix) - len(x.ResourcePrefix) })
	}
}

func (b *builder) buildRules(s *Store, y *StoreSpec) map[string]*rule {
	rules := map[string]*rule{}
	ok := b.names("rules", "rule", len(y.Rules), func(i int) string { return y.Rules[i].Name })
	for i, yr := range y.Rules {
		if !ok[i] {
			continue
		}
		r := &rule{name: yr.Name}
		rules[r.name] = r
		rl := s.realms[yr.Realm]
		if rl == nil {
			b.errf(at("rules", i, "realm"), "rule %q names unknown realm %q", yr.Name, yr.Realm)
		}
		if yr.Resource == "" {
			b.errf(at("rules", i, "resource"), "rule %q has no resource (write * for everything under the realm)", yr.Name)
		}
		if len(yr.Actions) == 0 {
			b.errf(at("rules", i, "actions"), "rule %q has no actions (write [\"*\"] for every action)", yr.Name)
		}
		for j, act := range yr.Actions {
			if act == "*" {
				if len(yr.Actions) > 1 {
					b.errf(elem("rules", i, "actions", j), "rule %q: \"*\" already means every action", yr.Name)
				}
				r.actions = nil
				break
			}
			up := strings.ToUpper(act)
			if !actionRE.MatchString(up) {
				b.errf(elem("rules", i, "actions", j), "rule %q: action %q is not an HTTP method or *", yr.Name, act)
			}
			r.actions = append(r.actions, up)
		}
		if rl == nil {
			continue
		}
		// The vendor appends the rule's resource to the realm's filter; a
		// leading slash on both sides would make a "//" nobody means.
		res := yr.Resource
		if strings.HasSuffix(rl.ResourcePrefix, "/") {
			res = strings.TrimPrefix(res, "/")
		}
		r.realm = rl
		r.pattern = rl.ResourcePrefix + res
		rl.rules = append(rl.rules, r)
	}
	return rules
}

func (b *builder) buildPolicies(s *Store, y *StoreSpec, rules map[string]*rule, groups map[string]bool) {
	ok := b.names("policies", "policy", len(y.Policies), func(i int) string { return y.Policies[i].Name })
	for i, yp := range y.Policies {
		if !ok[i] {
			continue
		}
		p := &policy{name: yp.Name, index: i, allow: yp.Allow == nil || *yp.Allow, users: map[string]bool{}, groups: map[string]bool{}}
		if p.allow {
			p.reason = fmt.Sprintf("allowed by policy %q", p.name)
		} else {
			p.reason = fmt.Sprintf("denied by policy %q", p.name)
		}
		for j, u := range yp.Users {
			switch {
			case u == "*":
				p.anyUser = true
			case s.users[u] == nil:
				b.errf(elem("policies", i, "users", j), "policy %q names unknown user %q", yp.Name, u)
			default:
				p.users[u] = true
			}
		}
		for j, g := range yp.Groups {
			if !groups[g] {
				b.errf(elem("policies", i, "groups", j), "policy %q names unknown group %q", yp.Name, g)
			}
			p.groups[g] = true
		}
		if len(yp.Users) == 0 && len(yp.Groups) == 0 {
			b.errf(at("policies", i, "name"), "policy %q names no users and no groups, so it would never apply (write users: [\"*\"] for every user)", yp.Name)
		}
		if len(yp.Rules) == 0 {
			b.errf(at("policies", i, "name"), "policy %q names no rules, so it would never apply", yp.Name)
		}
		for j, rn := range yp.Rules {
			r := rules[rn]
			if r == nil {
				b.errf(elem("policies", i, "rules", j), "policy %q names unknown rule %q", yp.Name, rn)
				continue
			}
			if !slices.Contains(r.policies, p) {
				r.policies = append(r.policies, p)
			}
		}
		b.buildResponses(p, i, yp.Responses)
		s.policies = append(s.policies, p)
	}
}

func (b *builder) buildResponses(p *policy, i int, hs Headers) {
	seen := map[string]bool{}
	for j, h := range hs {
		where := elem("policies", i, "responses", j)
		if !validHeaderName(h.Name) {
			b.errf(where, "policy %q: %q is not a valid HTTP header name", p.name, h.Name)
			continue
		}
		if seen[strings.ToLower(h.Name)] {
			b.errf(where, "policy %q: header %q given twice", p.name, h.Name)
			continue
		}
		seen[strings.ToLower(h.Name)] = true
		t, err := parseTemplate(h.Value)
		if err != nil {
			b.errf(where, "policy %q: header %q: %v", p.name, h.Name, err)
			continue
		}
		p.responses = append(p.responses, response{name: h.Name, tmpl: t})
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0) {
			return false
		}
	}
	return true
}

// Name is the file the store was read from.
func (s *Store) Name() string { return s.name }

// HCO returns a copy of the named Host Configuration Object.
func (s *Store) HCO(name string) (conf.HCO, bool) {
	h, ok := s.hcos[name]
	if !ok {
		return conf.HCO{}, false
	}
	h.PolicyServers = slices.Clone(h.PolicyServers)
	h.Clusters = slices.Clone(h.Clusters)
	for i := range h.Clusters {
		h.Clusters[i] = slices.Clone(h.Clusters[i])
	}
	return h, true
}

// ACO returns a copy of the named Agent Configuration Object.
func (s *Store) ACO(name string) (conf.ACO, bool) {
	a, ok := s.acos[name]
	if !ok {
		return conf.ACO{}, false
	}
	a.AgentNames = slices.Clone(a.AgentNames)
	if a.Extra != nil {
		extra := make(map[string]string, len(a.Extra))
		for k, v := range a.Extra {
			extra[k] = v
		}
		a.Extra = extra
	}
	return a, true
}

// Agent returns the named agent object.
func (s *Store) Agent(name string) (Agent, bool) {
	a, ok := s.agents[name]
	if !ok {
		return Agent{}, false
	}
	return a.Agent, true
}

// Agents lists the agent names in file order.
func (s *Store) Agents() []string { return slices.Clone(s.agentNames) }

// Realm returns the named realm.
func (s *Store) Realm(name string) (Realm, bool) {
	r, ok := s.realms[name]
	if !ok {
		return Realm{}, false
	}
	return r.Realm, true
}
