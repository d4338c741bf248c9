package policyserver

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/labs"
)

func seedStore(t testing.TB) *Store {
	t.Helper()
	s, err := SeedStore()
	if err != nil {
		t.Fatalf("SeedStore: %v", err)
	}
	return s
}

func TestSeedStore(t *testing.T) {
	s := seedStore(t)
	h, ok := s.HCO("hco.smps1")
	if !ok {
		t.Fatal("no hco.smps1")
	}
	if len(h.PolicyServers) != 1 || h.PolicyServers[0].String() != "smps1.shared.lab,44441,44442,44443" {
		t.Errorf("hco.smps1 servers = %v, want smps1 only", h.PolicyServers)
	}
	if !h.EnableFailover || h.MinSocketsPerPort != 2 || h.NewSocketStep != 2 || h.MaxSocketsPerPort != 20 || h.RequestTimeout.D() != 60*time.Second {
		t.Errorf("hco.smps1 = %+v", h)
	}
	both, ok := s.HCO("hco.both")
	if !ok || len(both.PolicyServers) != 2 || both.PolicyServers[0].Host != "smps1.shared.lab" || both.PolicyServers[1].Host != "smps2.shared.lab" {
		t.Errorf("hco.both = %+v", both)
	}
	a, ok := s.ACO("aco.wa1")
	if !ok || a.DefaultAgentName != "wa1" || a.PSPollInterval.D() != 30*time.Second || a.MaxResourceCacheSize != 0 || a.MaxSessionCacheSize != 0 {
		t.Errorf("aco.wa1 = %+v", a)
	}
	if ag, ok := s.Agent("wa1"); !ok || ag.ACO != "aco.wa1" {
		t.Errorf("agent wa1 = %+v, %v", ag, ok)
	}
	if _, ok := s.TrustedHost("trust_wa1"); ok {
		t.Error("the seed store must not know trust_wa1 before registration")
	}
	if err := s.CheckAdmin("siteminder", "siteminder"); err != nil {
		t.Errorf("CheckAdmin: %v", err)
	}
	r, ok := s.Realm("realm.forms")
	if !ok || r.AuthScheme != AuthForms || r.LoginURL != DefaultLoginURL || r.IdleTimeout != DefaultSessionIdleTimeout || r.MaxTimeout != DefaultSessionMaxTimeout {
		t.Errorf("realm.forms = %+v", r)
	}
	if !strings.HasPrefix(r.OID, "06-") {
		t.Errorf("realm OID %q", r.OID)
	}
	// Copies: a caller changing what it got must not change the store.
	h.PolicyServers[0].Host = "changed"
	if h2, _ := s.HCO("hco.smps1"); h2.PolicyServers[0].Host != "smps1.shared.lab" {
		t.Error("HCO returned shared slices")
	}
}

// base is a small valid store; each broken case replaces one piece of it.
const base = `admin:
  name: siteminder
  password_hash: "pbkdf2-sha256$10000$zU0RhT6JayQAmciRrBTuLA$oxoYncGsF1JCLI6r4EmvKZV4RD91avrdmjCgr2UW094"
session_key: a064d02230cd2dca09825f352f2205ab9de86a4f9985cc717d0402c761baf1c6
trusted_hosts:
  - name: trust_wa1
    secret: "{PLAIN}secret"
    hco: hco.smps1
hcos:
  - name: hco.smps1
    policy_servers: [smps1.shared.lab]
acos:
  - name: aco.wa1
    default_agent_name: wa1
agents:
  - name: wa1
    aco: aco.wa1
groups:
  - name: staff
users:
  - name: user1
    password_hash: "pbkdf2-sha256$10000$ngES6ml7BGC+qBN34uEZLg$oJCMmv3haJw5JnupR038EtgQQcsx8ZOYIz+lCMyvcUo"
    groups: [staff]
realms:
  - name: realm.protected
    agent: wa1
    resource_prefix: /protected/
rules:
  - name: rule.all
    realm: realm.protected
    resource: "*"
    actions: [GET]
policies:
  - name: policy.staff
    groups: [staff]
    rules: [rule.all]
    responses:
      SM_USER: "%user"
`

func TestParseStoreGood(t *testing.T) {
	s, err := ParseStore("store.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	th, ok := s.TrustedHost("trust_wa1")
	if !ok || string(th.Secret) != "secret" || th.HCO != "hco.smps1" {
		t.Errorf("trust_wa1 = %+v, %v", th, ok)
	}
	h, _ := s.HCO("hco.smps1")
	if h.MinSocketsPerPort != 2 || h.MaxSocketsPerPort != 20 || h.PolicyServers[0].Port() != 44443 {
		t.Errorf("HCO defaults not applied: %+v", h)
	}
	a, _ := s.ACO("aco.wa1")
	if a.MaxResourceCacheSize != 700 || a.PSPollInterval.D() != 30*time.Second {
		t.Errorf("ACO defaults not applied: %+v", a)
	}
	r, _ := s.Realm("realm.protected")
	if !r.Protected || r.AuthScheme != AuthBasic || r.LoginURL != "" {
		t.Errorf("realm defaults not applied: %+v", r)
	}
	if u := s.users["user1"]; u.dn != "uid=user1,ou=People,dc=shared,dc=lab" {
		t.Errorf("default DN = %q", u.dn)
	}
}

// lineOf is the 1-based line of the first line of text containing sub.
func lineOf(t *testing.T, text, sub string) int {
	t.Helper()
	i := strings.Index(text, sub)
	if i < 0 {
		t.Fatalf("%q not in the store text", sub)
	}
	return strings.Count(text[:i], "\n") + 1
}

func TestParseStoreErrors(t *testing.T) {
	cases := []struct {
		name     string
		old, new string // replace old by new in base
		at       string // the line the error must name: the line of this text in the new store
		want     string
		plus     int // added to the line of at
	}{
		{"unknown top-level field", "session_key:", "sesion_key:", "sesion_key:", `unknown field "sesion_key"`, 0},
		{"unknown user field", "    groups: [staff]", "    grups: [staff]", "grups:", `unknown field "grups"`, 0},
		{"unknown HCO field", "    policy_servers: [smps1.shared.lab]", "    policy_servers: [smps1.shared.lab]\n    min_socket_per_port: 3", "min_socket_per_port", `unknown field "min_socket_per_port"`, 0},
		{"unknown ACO field", "    default_agent_name: wa1", "    default_agent_name: wa1\n    pspollinterval: 3", "pspollinterval", `unknown field "pspollinterval"`, 0},
		{"trusted host unknown HCO", "    hco: hco.smps1", "    hco: hco.smps9", "hco.smps9", `trusted host "trust_wa1" names unknown HCO "hco.smps9"`, 0},
		{"agent unknown ACO", "    aco: aco.wa1", "    aco: aco.wa9", "aco.wa9", `agent "wa1" names unknown ACO "aco.wa9"`, 0},
		{"realm unknown agent", "    agent: wa1", "    agent: wa9", "agent: wa9", `realm "realm.protected" names unknown agent "wa9"`, 0},
		{"rule unknown realm", "    realm: realm.protected", "    realm: realm.nope", "realm.nope", `rule "rule.all" names unknown realm "realm.nope"`, 0},
		{"policy unknown group", "    groups: [staff]\n    rules", "    groups: [staf]\n    rules", "[staf]", `policy "policy.staff" names unknown group "staf"`, 0},
		{"policy unknown user", "    groups: [staff]\n    rules", "    users: [user9]\n    rules", "[user9]", `policy "policy.staff" names unknown user "user9"`, 0},
		{"policy unknown rule", "    rules: [rule.all]", "    rules: [rule.none]", "rule.none", `policy "policy.staff" names unknown rule "rule.none"`, 0},
		{"user unknown group", "    groups: [staff]\nrealms", "    groups: [staf]\nrealms", "[staf]", `user "user1" is in unknown group "staf"`, 0},
		{"duplicate user", "realms:", "  - name: user1\n    password_hash: x\nrealms:", "  - name: user1\n    password_hash: x", `duplicate user "user1" (first at line 21)`, 0},
		{"HCO validate", "    policy_servers: [smps1.shared.lab]", "    policy_servers: [smps1.shared.lab]\n    min_sockets_per_port: 0", "  - name: hco.smps1", `HCO "hco.smps1": min_sockets_per_port must be at least 1`, 0},
		{"ACO validate", "    default_agent_name: wa1", "    default_agent_name: wa1\n    ps_poll_interval: 0", "  - name: aco.wa1", `ps_poll_interval must be at least 1 second`, 0},
		{"ACO unknown default agent", "default_agent_name: wa1", "default_agent_name: wa2", "default_agent_name: wa2", `default_agent_name "wa2" is not an agent`, 0},
		{"bad policy server", "[smps1.shared.lab]", "[\"smps1,1,2\"]", "smps1,1,2", `want host,accounting,authentication,authorization ports`, 0},
		{"bad seconds", "    resource_prefix: /protected/", "    resource_prefix: /protected/\n    idle_timeout: soon", "idle_timeout", "want a whole number of seconds", 0},
		{"bad password hash", "$oJCMmv3ha", "$oJCM!!mv3ha", "oJCM!!", `user "user1": password hash: hash must be`, 0},
		{"bad admin hash", "$oxoYnc", "$ox!oYnc", "ox!oYnc", `admin "siteminder": password hash`, 0},
		{"missing session key", "session_key: a064d02230cd2dca09825f352f2205ab9de86a4f9985cc717d0402c761baf1c6\n", "", "", "session_key is missing", 0},
		{"short session key", "session_key: a064d02230cd2dca09825f352f2205ab9de86a4f9985cc717d0402c761baf1c6", "session_key: abcd", "session_key: abcd", "at least 16 bytes", 0},
		{"bad secret", `"{PLAIN}secret"`, `"{RC2}xyz"`, "{RC2}", "encrypted forms such as {RC2} belong in SmHost.conf only", 0},
		{"bad auth scheme", "    resource_prefix: /protected/", "    resource_prefix: /protected/\n    auth_scheme: kerberos", "kerberos", `auth_scheme "kerberos" is neither basic nor forms`, 0},
		{"prefix without slash", "resource_prefix: /protected/", "resource_prefix: protected/", "resource_prefix: protected/", `must start with /`, 0},
		{"bad template", `SM_USER: "%user"`, `SM_USER: "%usr"`, "%usr", `unknown variable %usr`, 0},
		{"bad header name", `SM_USER: "%user"`, `"SM USER": "%user"`, "SM USER", `"SM USER" is not a valid HTTP header name`, 0},
		{"bad action", "actions: [GET]", "actions: [GE T]", "GE T", `action "GE T" is not an HTTP method`, 0},
		{"policy without subjects", "    groups: [staff]\n    rules", "    rules", "  - name: policy.staff", "names no users and no groups", 0},
		{"syntax error", "agents:\n  - name: wa1", "agents:\n  - name: wa1\n - oops", "  - name: wa1\n - oops", "value is not allowed in this context", 1},
		{"duplicate key", "    aco: aco.wa1", "    aco: aco.wa1\n    aco: aco.wa1", "    aco: aco.wa1\n    aco", `mapping key "aco" already defined at [17:5]`, 1},
		{"wrong type", "actions: [GET]", "actions: GET", "actions: GET", "actions: string was used where sequence is expected", 0},
		{"bad name", "  - name: staff", "  - name: st aff", "st aff", `has spaces or control characters`, 0},
		{"bad directory latency", "realms:", "directory:\n  latency: 5x\nrealms:", "latency: 5x", `directory latency "5x": want a duration such as 5ms`, 0},
		{"directory latency too long", "realms:", "directory:\n  jitter: 5m\nrealms:", "jitter: 5m", `directory jitter 5m0s: want 0 to 1m0s`, 0},
		{"negative lookups", "realms:", "directory:\n  lookups_per_login: -1\nrealms:", "lookups_per_login", `directory lookups_per_login -1: want 0 to 100`, 0},
		{"unknown directory field", "realms:", "directory:\n  latncy: 5ms\nrealms:", "latncy", `unknown field "latncy"`, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(base, c.old) {
				t.Fatalf("%q not in base", c.old)
			}
			text := strings.Replace(base, c.old, c.new, 1)
			_, err := ParseStore("store.yaml", []byte(text))
			if err == nil {
				t.Fatalf("no error; want %q", c.want)
			}
			// file:line:col: with the line of at, and a column.
			want := regexp.MustCompile(`^store\.yaml: `)
			if c.at != "" {
				want = regexp.MustCompile(`^store\.yaml:` + strconv.Itoa(lineOf(t, text, c.at)+c.plus) + `:[1-9][0-9]*: `)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if want.MatchString(line) && strings.Contains(line, c.want) {
					return
				}
			}
			t.Errorf("error:\n%v\nwant a line matching %s containing %q", err, want, c.want)
		})
	}
}

func TestParseStoreWhole(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"empty", "", "store.yaml: the store is empty"},
		{"comment only", "# nothing\n", "store.yaml: the store is empty"},
		{"not a mapping", "- a\n- b\n", "store.yaml:1:1: sequence was used where mapping is expected"},
		{"two documents", base + "---\nadmin: {}\n", "more than one YAML document"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseStore("store.yaml", []byte(c.text))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func TestParseStoreReportsEveryProblem(t *testing.T) {
	text := strings.Replace(base, "    aco: aco.wa1", "    aco: aco.wa9", 1)
	text = strings.Replace(text, "    hco: hco.smps1", "    hco: hco.smps9", 1)
	_, err := ParseStore("store.yaml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "aco.wa9") || !strings.Contains(err.Error(), "hco.smps9") {
		t.Errorf("want both problems, got %v", err)
	}
}

func TestLoadStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.yaml")
	if err := os.WriteFile(path, labs.SeedStore, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != path {
		t.Errorf("Name = %q", s.Name())
	}
	broken := bytes.Replace(labs.SeedStore, []byte("session_key:"), []byte("session_kye:"), 1)
	if err := os.WriteFile(path, broken, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadStore(path); err == nil || !strings.HasPrefix(err.Error(), path+":") {
		t.Errorf("err = %v, want it to start with %s:", err, path)
	}
	if _, err := LoadStore(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseStore(f *testing.F) {
	f.Add(labs.SeedStore)
	f.Add([]byte(base))
	f.Add([]byte("hcos:\n  - &a {name: x}\n  - *a\n"))
	f.Add([]byte("policies:\n  - name: p\n    responses: [1]\n"))
	f.Add([]byte("hcos:\n  - &a {name: *a}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStore("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		// A store that parses must answer without panicking.
		now := time.Now()
		for _, a := range s.Agents() {
			s.IsProtected(a, "/protected/x", "GET")
			s.Authorize(a, "x", "/protected/x", "GET", now)
		}
	})
}

// TestParseStorePositions: each problem is placed at the line and column
// of what it is about, the library's positions for the file's problems and
// the node of the spec's place for the model's.
func TestParseStorePositions(t *testing.T) {
	cases := []struct {
		name, old, new string
		want           string // the whole line of the error
	}{
		{"unknown key: at the key", "    groups: [staff]\nrealms", "    grups: [staff]\nrealms", `store.yaml:23:5: unknown field "grups"`},
		{"unknown top-level key", "session_key:", "sesion_key:", `store.yaml:4:1: unknown field "sesion_key"`},
		{"unknown name: at the value", "    hco: hco.smps1", "    hco: hco.smps9", `store.yaml:8:10: trusted host "trust_wa1" names unknown HCO "hco.smps9"`},
		{"list element: at the element", "    groups: [staff]\n    rules", "    groups: [staff, staf]\n    rules", `store.yaml:35:21: policy "policy.staff" names unknown group "staf"`},
		{"duplicate: at the name, and the first's line", "realms:", "  - name: user1\n    password_hash: x\nrealms:", `store.yaml:24:11: duplicate user "user1" (first at line 21)`},
		{"the object: at its first key", "    policy_servers: [smps1.shared.lab]", "    policy_servers: [smps1.shared.lab]\n    min_sockets_per_port: 0", `store.yaml:10:5: HCO "hco.smps1": min_sockets_per_port must be at least 1, got 0`},
		{"a response: at its header", `SM_USER: "%user"`, `SM_USER: "%usr"`, `store.yaml:38:7: policy "policy.staff": header "SM_USER": unknown variable %usr`},
		{"responses not a mapping", `    responses:` + "\n" + `      SM_USER: "%user"`, `    responses: [SM_USER]`, `store.yaml:37:16: responses must be a mapping of header name to value`},
		{"a response not a string", `SM_USER: "%user"`, `SM_USER: [a]`, `store.yaml:38:7: the value of header "SM_USER" must be a string`},
		{"wrong type: the key named", "    actions: [GET]", "    actions: {GET: 1}", `store.yaml:32:14: actions: mapping was used where sequence is expected`},
		{"a string that is not one", "    resource: \"*\"", "    resource: [a]", `store.yaml:31:15: resource: want a string, got a list`},
		{"missing section: the file", "session_key: a064d02230cd2dca09825f352f2205ab9de86a4f9985cc717d0402c761baf1c6\n", "", "store.yaml: session_key is missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(base, c.old) {
				t.Fatalf("%q not in base", c.old)
			}
			_, err := ParseStore("store.yaml", []byte(strings.Replace(base, c.old, c.new, 1)))
			if err == nil {
				t.Fatal("no error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, c.want) {
					return
				}
			}
			t.Errorf("error:\n%v\nwant a line starting %q", err, c.want)
		})
	}
}

// TestParseStoreAmbiguousNumber: an unquoted hex secret of digits is
// refused rather than read as a number (the YAML library reads 0011 as
// the octal 9); quoted, it is kept as written.
func TestParseStoreAmbiguousNumber(t *testing.T) {
	text := strings.Replace(base, `secret: "{PLAIN}secret"`, `secret: 00112233`, 1)
	_, err := ParseStore("store.yaml", []byte(text))
	if err == nil || !strings.HasPrefix(err.Error(), "store.yaml:7:13: 00112233: write it in quotes") {
		t.Errorf("unquoted: %v", err)
	}
	text = strings.Replace(base, `secret: "{PLAIN}secret"`, `secret: "00112233"`, 1)
	s, err := ParseStore("store.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if th, _ := s.TrustedHost("trust_wa1"); !bytes.Equal(th.Secret, []byte{0x00, 0x11, 0x22, 0x33}) {
		t.Errorf("secret %x, want 00112233", th.Secret)
	}
}

// TestNewStore: the model checks a spec built in Go, with no file: its
// problems are placed by where they are in the spec.
func TestNewStore(t *testing.T) {
	spec, err := SeedSpec()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(spec); err != nil {
		t.Fatalf("the seed spec: %v", err)
	}
	tests := []struct {
		name   string
		change func(*StoreSpec)
		want   []string // every error line
	}{
		{"realm timeouts of its own", func(s *StoreSpec) {
			idle := conf.Seconds(5 * time.Minute)
			s.Realms[1].IdleTimeout = &idle
		}, nil},
		{"unknown HCO", func(s *StoreSpec) {
			s.TrustedHosts = append(s.TrustedHosts, TrustedHostSpec{Name: "h", Secret: "00", HCO: "hco.none"})
		}, []string{`trusted_hosts[0].hco: trusted host "h" names unknown HCO "hco.none"`}},
		{"duplicate, and an unknown group", func(s *StoreSpec) {
			s.Groups = append(s.Groups, s.Groups[0])
			s.Users[0].Groups = append(s.Users[0].Groups, "nobody")
		}, []string{
			`groups[2].name: duplicate group "staff" (first at groups[0].name)`,
			`users[0].groups[1]: user "user1" is in unknown group "nobody"`,
		}},
		{"bad header", func(s *StoreSpec) {
			s.Policies[0].Responses = append(s.Policies[0].Responses, Header{Name: "X Bad", Value: "v"})
		}, []string{`policies[0].responses[2]: policy "policy.staff": "X Bad" is not a valid HTTP header name`}},
		{"no session key", func(s *StoreSpec) { s.SessionKey = "" }, []string{"session_key: session_key is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := SeedSpec()
			if err != nil {
				t.Fatal(err)
			}
			tt.change(spec)
			_, err = NewStore(spec)
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			for i := range max(len(got), len(tt.want)) {
				if i >= len(got) || i >= len(tt.want) || !strings.HasPrefix(got[i], tt.want[i]) {
					t.Fatalf("errors:\n%v\nwant lines starting:\n%s", err, strings.Join(tt.want, "\n"))
				}
			}
		})
	}
}
