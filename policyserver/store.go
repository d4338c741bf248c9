package policyserver

// The policy store: the objects a Policy Server serves (HCOs, ACOs, agents,
// trusted hosts) and the ones it decides with (users, groups, realms, rules,
// policies), read from one YAML file. Everything parsed here is immutable
// after ParseStore returns, so the request path reads it without locks; the
// little that changes at run time (registrations, revoked sessions, the
// management queue) has its own synchronisation.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/labs"
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
	Name        string
	ACO         string
	Description string
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

// The YAML shapes. They are decoded with KnownFields, so a misspelt key is
// an error instead of a silently missing setting.
type yamlStore struct {
	Admin        *yamlAdmin        `yaml:"admin"`
	SessionKey   string            `yaml:"session_key"`
	TrustedHosts []yamlTrustedHost `yaml:"trusted_hosts"`
	HCOs         []conf.HCO        `yaml:"hcos"`
	ACOs         []conf.ACO        `yaml:"acos"`
	Agents       []yamlAgent       `yaml:"agents"`
	Groups       []yamlGroup       `yaml:"groups"`
	Users        []yamlUser        `yaml:"users"`
	Realms       []yamlRealm       `yaml:"realms"`
	Rules        []yamlRule        `yaml:"rules"`
	Policies     []yamlPolicy      `yaml:"policies"`
}

type yamlAdmin struct {
	Name         string `yaml:"name"`
	PasswordHash string `yaml:"password_hash"`
}

type yamlTrustedHost struct {
	Name   string `yaml:"name"`
	Secret string `yaml:"secret"`
	HCO    string `yaml:"hco"`
}

type yamlAgent struct {
	Name        string `yaml:"name"`
	ACO         string `yaml:"aco"`
	Description string `yaml:"description"`
}

type yamlGroup struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
}

type yamlUser struct {
	Name         string   `yaml:"name"`
	PasswordHash string   `yaml:"password_hash"`
	DN           string   `yaml:"dn"`
	Groups       []string `yaml:"groups"`
}

type yamlRealm struct {
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

type yamlRule struct {
	Name     string   `yaml:"name"`
	Realm    string   `yaml:"realm"`
	Resource string   `yaml:"resource"`
	Actions  []string `yaml:"actions"`
}

type yamlPolicy struct {
	Name        string    `yaml:"name"`
	Description string    `yaml:"description"`
	Users       []string  `yaml:"users"`
	Groups      []string  `yaml:"groups"`
	Rules       []string  `yaml:"rules"`
	Allow       *bool     `yaml:"allow"`
	Responses   yaml.Node `yaml:"responses"` // a node, to keep the headers in file order
}

// LoadStore reads and parses a store file.
func LoadStore(path string) (*Store, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy store: %w", err)
	}
	return ParseStore(path, data)
}

// SeedStore parses the store embedded in the binaries, the seed's environment.
func SeedStore() (*Store, error) {
	return ParseStore("labs/seed-store.yaml", labs.SeedStore)
}

// ParseStore parses a store; name is used in error messages, which have the
// form name:line: message, one line per problem found.
func ParseStore(name string, data []byte) (*Store, error) {
	var y yamlStore
	var root yaml.Node
	if err := decodeStrict(data, &y, &root); err != nil {
		return nil, yamlError(name, err)
	}
	c := &checker{name: name, top: topMapping(&root)}
	c.checkKnownKeys("hcos", reflect.TypeFor[conf.HCO](), "an HCO")
	c.checkKnownKeys("acos", reflect.TypeFor[conf.ACO](), "an ACO")
	s := c.build(&y)
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	s.name = name
	s.mgmt = NewManagementQueue(s.agentNames, DefaultManagementQueueLimit)
	key := s.sessionKey
	s.scratch.New = func() any { return &tokenScratch{mac: hmac.New(sha256.New, key)} }
	s.sessions.revoked = make(map[[tokenIDLen]byte]int64)
	s.reg.snap.Store(&regSnapshot{hosts: map[string]regHost{}})
	return s, nil
}

// decodeStrict decodes the one document in data twice: into the typed
// structs with unknown keys rejected, and into a node tree that gives the
// line numbers for the checks that follow.
func decodeStrict(data []byte, y *yamlStore, root *yaml.Node) (err error) {
	// yaml.v3 is not hardened against every malformed input; a panic in it
	// must become an error for this file, not take a Policy Server down.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(y); err != nil {
		if err == io.EOF {
			return errors.New("the store is empty")
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return errors.New("more than one YAML document: a store is one document")
	}
	return yaml.Unmarshal(data, root)
}

var (
	yamlLineRE    = regexp.MustCompile(`(?s)^(?:yaml: )?line (\d+): (.*)$`)
	yamlNestedRE  = regexp.MustCompile(`yaml: unmarshal errors:\s*line \d+: `)
	yamlUnknownRE = regexp.MustCompile(`field (\S+) not found in type \S+\.(\w+)`)
	yamlTypeRE    = regexp.MustCompile(`[\[\]*]*(?:policyserver|conf)\.(\w+)`)
	// What the Go types of the YAML shapes are called in messages, alone
	// and in a list.
	yamlTypeNames = map[string][2]string{
		"yamlStore": {"the store", "stores"}, "yamlAdmin": {"admin", "admins"},
		"yamlTrustedHost": {"a trusted host", "trusted_hosts"}, "yamlAgent": {"an agent", "agents"},
		"yamlGroup": {"a group", "groups"}, "yamlUser": {"a user", "users"},
		"yamlRealm": {"a realm", "realms"}, "yamlRule": {"a rule", "rules"},
		"yamlPolicy": {"a policy", "policies"}, "plain": {"an HCO or ACO", "hcos or acos"},
		"HCO": {"an HCO", "hcos"}, "ACO": {"an ACO", "acos"},
		"yamlRegistrations": {"the registrations file", "registrations files"},
		"yamlRegHost":       {"a registered host", "trusted_hosts"},
	}
)

// yamlError rewrites yaml.v3's messages into name:line: form, one error per
// problem, with the Go type names replaced by the store's words.
func yamlError(name string, err error) error {
	var msgs []string
	if te, ok := err.(*yaml.TypeError); ok {
		msgs = te.Errors
	} else {
		// An UnmarshalYAML of conf may wrap a TypeError of its own: keep
		// its words, drop the second "yaml: unmarshal errors: line N".
		msgs = []string{yamlNestedRE.ReplaceAllString(err.Error(), "")}
	}
	errs := make([]error, 0, len(msgs))
	for _, m := range msgs {
		m = yamlUnknownRE.ReplaceAllStringFunc(m, func(s string) string {
			sub := yamlUnknownRE.FindStringSubmatch(s)
			what, ok := yamlTypeNames[sub[2]]
			if !ok {
				what[0] = sub[2]
			}
			return fmt.Sprintf("unknown field %q in %s", sub[1], what[0])
		})
		m = yamlTypeRE.ReplaceAllStringFunc(m, func(s string) string {
			what, ok := yamlTypeNames[yamlTypeRE.FindStringSubmatch(s)[1]]
			switch {
			case !ok:
				return s
			case strings.HasPrefix(s, "[]"):
				return "a list of " + what[1]
			}
			return what[0]
		})
		if sub := yamlLineRE.FindStringSubmatch(m); sub != nil {
			errs = append(errs, fmt.Errorf("%s:%s: %s", name, sub[1], sub[2]))
		} else {
			errs = append(errs, fmt.Errorf("%s: %s", name, strings.TrimPrefix(m, "yaml: ")))
		}
	}
	return errors.Join(errs...)
}

// checker collects every problem of a store, so that one run of the parser
// shows the author all of them.
type checker struct {
	name string
	top  *yaml.Node
	errs []error
}

func (c *checker) errf(line int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		c.errs = append(c.errs, fmt.Errorf("%s:%d: %s", c.name, line, msg))
	} else {
		c.errs = append(c.errs, fmt.Errorf("%s: %s", c.name, msg))
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func topMapping(root *yaml.Node) *yaml.Node {
	n := deref(root)
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = deref(n.Content[0])
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	return n
}

// mapValue returns the key node and value node of key in mapping m.
func mapValue(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], deref(m.Content[i+1])
		}
	}
	return nil, nil
}

func (c *checker) item(section string, i int) *yaml.Node {
	_, seq := mapValue(c.top, section)
	if seq == nil || seq.Kind != yaml.SequenceNode || i >= len(seq.Content) {
		return nil
	}
	return deref(seq.Content[i])
}

// at gives the line of a field of the i-th element of a section, falling
// back to the element, then the section; i < 0 means the section itself.
func (c *checker) at(section string, i int, key string) int {
	k, v := mapValue(c.top, section)
	if i < 0 {
		if key != "" {
			if _, kv := mapValue(v, key); kv != nil {
				return kv.Line
			}
		}
		if k != nil {
			return k.Line
		}
		return 0
	}
	if it := c.item(section, i); it != nil {
		if key != "" {
			if _, kv := mapValue(it, key); kv != nil {
				return kv.Line
			}
		}
		return it.Line
	}
	if k != nil {
		return k.Line
	}
	return 0
}

// checkKnownKeys does for HCOs and ACOs what KnownFields does for the rest:
// their UnmarshalYAML (which applies the defaults) decodes through a fresh
// yaml decoder that does not inherit KnownFields.
func (c *checker) checkKnownKeys(section string, t reflect.Type, what string) {
	known := map[string]bool{}
	for f := range t.Fields() {
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			known[tag] = true
		}
	}
	_, seq := mapValue(c.top, section)
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return
	}
	for _, it := range seq.Content {
		it = deref(it)
		if it == nil || it.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(it.Content); j += 2 {
			if k := it.Content[j]; !known[k.Value] {
				c.errf(k.Line, "unknown field %q in %s", k.Value, what)
			}
		}
	}
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
func (c *checker) names(section, what string, n int, name func(int) string) []bool {
	ok := make([]bool, n)
	seen := map[string]int{}
	for i := range n {
		nm := name(i)
		if err := checkName(nm); err != nil {
			c.errf(c.at(section, i, "name"), "%s %d %v", what, i+1, err)
			continue
		}
		if first, dup := seen[nm]; dup {
			c.errf(c.at(section, i, "name"), "duplicate %s %q (first at line %d)", what, nm, c.at(section, first, "name"))
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

func (c *checker) build(y *yamlStore) *Store {
	s := &Store{
		hcos:        map[string]conf.HCO{},
		acos:        map[string]conf.ACO{},
		agents:      map[string]*agent{},
		users:       map[string]*user{},
		realms:      map[string]*realm{},
		staticHosts: map[string]TrustedHost{},
	}
	if c.top == nil {
		c.errf(0, "the store must be a YAML mapping (admin:, session_key:, hcos:, ...)")
		return s
	}

	line := c.at("session_key", -1, "")
	switch key, err := hex.DecodeString(y.SessionKey); {
	case y.SessionKey == "":
		c.errf(line, "session_key is missing: it signs session tokens; make one with `openssl rand -hex 32`")
	case err != nil:
		c.errf(line, "session_key must be hex digits: %v", err)
	case len(key) < 16:
		c.errf(line, "session_key must be at least 16 bytes (32 hex digits), got %d", len(key))
	default:
		s.sessionKey = key
	}

	if y.Admin != nil {
		if err := checkName(y.Admin.Name); err != nil {
			c.errf(c.at("admin", -1, "name"), "admin %v", err)
		}
		h, err := parsePasswordHash(y.Admin.PasswordHash)
		if err != nil {
			c.errf(c.at("admin", -1, "password_hash"), "admin %q: %v", y.Admin.Name, err)
		} else {
			s.admin = &admin{name: y.Admin.Name, hash: h}
		}
	}

	ok := c.names("hcos", "HCO", len(y.HCOs), func(i int) string { return y.HCOs[i].Name })
	for i, h := range y.HCOs {
		if !ok[i] {
			continue
		}
		if err := h.Validate(); err != nil {
			for _, e := range splitJoined(err) {
				c.errf(c.at("hcos", i, ""), "%v", e)
			}
		}
		s.hcos[h.Name] = h
	}

	ok = c.names("acos", "ACO", len(y.ACOs), func(i int) string { return y.ACOs[i].Name })
	for i, a := range y.ACOs {
		if !ok[i] {
			continue
		}
		if err := a.Validate(); err != nil {
			for _, e := range splitJoined(err) {
				c.errf(c.at("acos", i, ""), "%v", e)
			}
		}
		s.acos[a.Name] = a
	}

	ok = c.names("trusted_hosts", "trusted host", len(y.TrustedHosts), func(i int) string { return y.TrustedHosts[i].Name })
	for i, th := range y.TrustedHosts {
		if !ok[i] {
			continue
		}
		secret, err := parseSecret(th.Secret)
		if err != nil {
			c.errf(c.at("trusted_hosts", i, "secret"), "trusted host %q: %v", th.Name, err)
		}
		if _, known := s.hcos[th.HCO]; !known {
			c.errf(c.at("trusted_hosts", i, "hco"), "trusted host %q names unknown HCO %q", th.Name, th.HCO)
		}
		s.staticHosts[th.Name] = TrustedHost{Name: th.Name, Secret: secret, HCO: th.HCO}
	}

	ok = c.names("agents", "agent", len(y.Agents), func(i int) string { return y.Agents[i].Name })
	for i, a := range y.Agents {
		if !ok[i] {
			continue
		}
		if _, known := s.acos[a.ACO]; !known {
			c.errf(c.at("agents", i, "aco"), "agent %q names unknown ACO %q", a.Name, a.ACO)
		}
		s.agents[a.Name] = &agent{Agent: Agent{Name: a.Name, ACO: a.ACO, Description: a.Description}}
		s.agentNames = append(s.agentNames, a.Name)
	}
	for i, a := range y.ACOs {
		if a.DefaultAgentName != "" && s.agents[a.DefaultAgentName] == nil {
			c.errf(c.at("acos", i, "default_agent_name"), "ACO %q: default_agent_name %q is not an agent of the store", a.Name, a.DefaultAgentName)
		}
	}

	groups := map[string]bool{}
	ok = c.names("groups", "group", len(y.Groups), func(i int) string { return y.Groups[i].Name })
	for i, g := range y.Groups {
		if ok[i] {
			groups[g.Name] = true
		}
	}

	ok = c.names("users", "user", len(y.Users), func(i int) string { return y.Users[i].Name })
	for i, u := range y.Users {
		if !ok[i] {
			continue
		}
		h, err := parsePasswordHash(u.PasswordHash)
		if err != nil {
			c.errf(c.at("users", i, "password_hash"), "user %q: %v", u.Name, err)
		}
		for j, g := range u.Groups {
			if !groups[g] {
				c.errf(c.lineOfListItem("users", i, "groups", j), "user %q is in unknown group %q", u.Name, g)
			}
		}
		dn := u.DN
		if dn == "" {
			dn = fmt.Sprintf(defaultUserDN, u.Name)
		}
		s.users[u.Name] = &user{name: u.Name, dn: dn, groups: slices.Clone(u.Groups), hash: h}
	}

	c.buildRealms(s, y)
	rules := c.buildRules(s, y)
	c.buildPolicies(s, y, rules, groups)
	return s
}

func (c *checker) lineOfListItem(section string, i int, key string, j int) int {
	if _, l := mapValue(c.item(section, i), key); l != nil && l.Kind == yaml.SequenceNode && j < len(l.Content) {
		return l.Content[j].Line
	}
	return c.at(section, i, key)
}

func (c *checker) buildRealms(s *Store, y *yamlStore) {
	ok := c.names("realms", "realm", len(y.Realms), func(i int) string { return y.Realms[i].Name })
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
			c.errf(c.at("realms", i, "agent"), "realm %q names unknown agent %q", yr.Name, yr.Agent)
		}
		if !strings.HasPrefix(yr.ResourcePrefix, "/") {
			c.errf(c.at("realms", i, "resource_prefix"), "realm %q: resource_prefix %q must start with /", yr.Name, yr.ResourcePrefix)
		}
		switch r.AuthScheme {
		case "":
			r.AuthScheme = AuthBasic
		case AuthBasic, AuthForms:
		default:
			c.errf(c.at("realms", i, "auth_scheme"), "realm %q: auth_scheme %q is neither basic nor forms", yr.Name, yr.AuthScheme)
		}
		if r.AuthScheme == AuthForms && r.LoginURL == "" {
			r.LoginURL = DefaultLoginURL
		}
		if r.AuthScheme != AuthForms && r.LoginURL != "" {
			c.errf(c.at("realms", i, "login_url"), "realm %q: login_url is for auth_scheme forms only", yr.Name)
		}
		if yr.IdleTimeout != nil {
			r.IdleTimeout = *yr.IdleTimeout
		}
		if yr.MaxTimeout != nil {
			r.MaxTimeout = *yr.MaxTimeout
		}
		if r.IdleTimeout < conf.Seconds(time.Second) || r.MaxTimeout < conf.Seconds(time.Second) {
			c.errf(c.at("realms", i, "idle_timeout"), "realm %q: idle_timeout and max_timeout must be at least 1 second", yr.Name)
		}
		if a != nil {
			for _, other := range a.realms {
				if other.ResourcePrefix == r.ResourcePrefix {
					c.errf(c.at("realms", i, "resource_prefix"), "realm %q has the same resource_prefix %q as realm %q of agent %q", r.Name, r.ResourcePrefix, other.Name, a.Name)
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

func (c *checker) buildRules(s *Store, y *yamlStore) map[string]*rule {
	rules := map[string]*rule{}
	ok := c.names("rules", "rule", len(y.Rules), func(i int) string { return y.Rules[i].Name })
	for i, yr := range y.Rules {
		if !ok[i] {
			continue
		}
		r := &rule{name: yr.Name}
		rules[r.name] = r
		rl := s.realms[yr.Realm]
		if rl == nil {
			c.errf(c.at("rules", i, "realm"), "rule %q names unknown realm %q", yr.Name, yr.Realm)
		}
		if yr.Resource == "" {
			c.errf(c.at("rules", i, "resource"), "rule %q has no resource (write * for everything under the realm)", yr.Name)
		}
		if len(yr.Actions) == 0 {
			c.errf(c.at("rules", i, "actions"), "rule %q has no actions (write [\"*\"] for every action)", yr.Name)
		}
		for j, act := range yr.Actions {
			if act == "*" {
				if len(yr.Actions) > 1 {
					c.errf(c.lineOfListItem("rules", i, "actions", j), "rule %q: \"*\" already means every action", yr.Name)
				}
				r.actions = nil
				break
			}
			up := strings.ToUpper(act)
			if !actionRE.MatchString(up) {
				c.errf(c.lineOfListItem("rules", i, "actions", j), "rule %q: action %q is not an HTTP method or *", yr.Name, act)
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

func (c *checker) buildPolicies(s *Store, y *yamlStore, rules map[string]*rule, groups map[string]bool) {
	ok := c.names("policies", "policy", len(y.Policies), func(i int) string { return y.Policies[i].Name })
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
				c.errf(c.lineOfListItem("policies", i, "users", j), "policy %q names unknown user %q", yp.Name, u)
			default:
				p.users[u] = true
			}
		}
		for j, g := range yp.Groups {
			if !groups[g] {
				c.errf(c.lineOfListItem("policies", i, "groups", j), "policy %q names unknown group %q", yp.Name, g)
			}
			p.groups[g] = true
		}
		if len(yp.Users) == 0 && len(yp.Groups) == 0 {
			c.errf(c.at("policies", i, "name"), "policy %q names no users and no groups, so it would never apply (write users: [\"*\"] for every user)", yp.Name)
		}
		if len(yp.Rules) == 0 {
			c.errf(c.at("policies", i, "name"), "policy %q names no rules, so it would never apply", yp.Name)
		}
		for j, rn := range yp.Rules {
			r := rules[rn]
			if r == nil {
				c.errf(c.lineOfListItem("policies", i, "rules", j), "policy %q names unknown rule %q", yp.Name, rn)
				continue
			}
			if !slices.Contains(r.policies, p) {
				r.policies = append(r.policies, p)
			}
		}
		c.buildResponses(p, &yp.Responses)
		s.policies = append(s.policies, p)
	}
}

func (c *checker) buildResponses(p *policy, n *yaml.Node) {
	n = deref(n)
	if n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return
	}
	if n.Kind != yaml.MappingNode {
		c.errf(n.Line, "policy %q: responses must be a mapping of header name to value", p.name)
		return
	}
	seen := map[string]bool{}
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := n.Content[j], deref(n.Content[j+1])
		if !validHeaderName(k.Value) {
			c.errf(k.Line, "policy %q: %q is not a valid HTTP header name", p.name, k.Value)
			continue
		}
		if seen[strings.ToLower(k.Value)] {
			c.errf(k.Line, "policy %q: header %q given twice", p.name, k.Value)
			continue
		}
		seen[strings.ToLower(k.Value)] = true
		if v == nil || v.Kind != yaml.ScalarNode {
			c.errf(k.Line, "policy %q: the value of header %q must be a string", p.name, k.Value)
			continue
		}
		t, err := parseTemplate(v.Value)
		if err != nil {
			c.errf(v.Line, "policy %q: header %q: %v", p.name, k.Value, err)
			continue
		}
		p.responses = append(p.responses, response{name: k.Value, tmpl: t})
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
