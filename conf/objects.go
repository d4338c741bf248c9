package conf

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/agentlab/agentlab/yamlfile"
)

// The vendor's well-known Policy Server ports. Since r6 one server process
// answers any request on any of them; agents use the authorization port.
const (
	AccountingPort     = 44441
	AuthenticationPort = 44442
	AuthorizationPort  = 44443
)

// PolicyServer is one `policyserver` entry: a host and its accounting,
// authentication and authorization ports, 0 meaning "none".
type PolicyServer struct {
	Host               string
	AccountingPort     int
	AuthenticationPort int
	AuthorizationPort  int
}

// ParsePolicyServer reads the vendor's "host,acct,auth,az" form. A bare host
// gets the default ports, as the vendor's tools do.
func ParsePolicyServer(s string) (PolicyServer, error) {
	parts := strings.Split(strings.TrimSpace(s), ",")
	host := strings.TrimSpace(parts[0])
	if host == "" {
		return PolicyServer{}, fmt.Errorf("policy server %q: empty host name", s)
	}
	if strings.ContainsAny(host, " \t\"") {
		return PolicyServer{}, fmt.Errorf("policy server %q: host name %q has spaces or quotes", s, host)
	}
	ps := PolicyServer{Host: host, AccountingPort: AccountingPort, AuthenticationPort: AuthenticationPort, AuthorizationPort: AuthorizationPort}
	if len(parts) == 1 {
		return ps, nil
	}
	if len(parts) != 4 {
		return PolicyServer{}, fmt.Errorf("policy server %q: want host,accounting,authentication,authorization ports, got %d fields", s, len(parts))
	}
	ports := make([]int, 3)
	for i, p := range parts[1:] {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 || n > 65535 {
			return PolicyServer{}, fmt.Errorf("policy server %q: port %q is not a number from 0 to 65535", s, strings.TrimSpace(p))
		}
		ports[i] = n
	}
	ps.AccountingPort, ps.AuthenticationPort, ps.AuthorizationPort = ports[0], ports[1], ports[2]
	if ps.Port() == 0 {
		return PolicyServer{}, fmt.Errorf("policy server %q: every port is 0 (none)", s)
	}
	return ps, nil
}

// String gives the vendor's "host,acct,auth,az" form.
func (p PolicyServer) String() string {
	return fmt.Sprintf("%s,%d,%d,%d", p.Host, p.AccountingPort, p.AuthenticationPort, p.AuthorizationPort)
}

// Port is the port an agent connects to: the authorization port, or the
// first port that is not 0 when the authorization port is none.
func (p PolicyServer) Port() int {
	for _, n := range []int{p.AuthorizationPort, p.AuthenticationPort, p.AccountingPort} {
		if n != 0 {
			return n
		}
	}
	return 0
}

// Addr is host:Port(), what an agent dials.
func (p PolicyServer) Addr() string {
	return p.Host + ":" + strconv.Itoa(p.Port())
}

// MarshalYAML writes the vendor's string form.
func (p PolicyServer) MarshalYAML() (any, error) { return p.String(), nil }

// UnmarshalYAML reads the vendor's string form; a problem is placed at the
// entry's line and column.
func (p *PolicyServer) UnmarshalYAML(n ast.Node) error {
	s, ok := yamlfile.Scalar(n)
	if !ok {
		return yamlfile.Errorf(n, "policy server: want \"host,accounting,authentication,authorization\" or a host name")
	}
	ps, err := ParsePolicyServer(s)
	if err != nil {
		return yamlfile.Errorf(n, "%v", err)
	}
	*p = ps
	return nil
}

// Seconds is a duration written as a whole number of seconds, the unit of
// every timeout in the vendor's objects.
type Seconds time.Duration

func (s Seconds) D() time.Duration { return time.Duration(s) }

func (s Seconds) MarshalYAML() (any, error) { return int64(time.Duration(s) / time.Second), nil }

func (s *Seconds) UnmarshalYAML(n ast.Node) error {
	// Read from the text: decoding into an int64 would truncate 1.5 silently.
	text, ok := yamlfile.Scalar(n)
	if !ok {
		return yamlfile.Errorf(n, "want a whole number of seconds, got a %s", n.Type().YAMLName())
	}
	v, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return yamlfile.Errorf(n, "want a whole number of seconds, got %q", text)
	}
	if v < 0 {
		return yamlfile.Errorf(n, "seconds must not be negative, got %d", v)
	}
	*s = Seconds(time.Duration(v) * time.Second)
	return nil
}

// HCO is the Host Configuration Object (DOMAIN.md section 2).
type HCO struct {
	Name              string           `yaml:"name"`
	PolicyServers     []PolicyServer   `yaml:"policy_servers"`
	EnableFailover    bool             `yaml:"enable_failover"`
	MinSocketsPerPort int              `yaml:"min_sockets_per_port"`
	NewSocketStep     int              `yaml:"new_socket_step"`
	MaxSocketsPerPort int              `yaml:"max_sockets_per_port"`
	RequestTimeout    Seconds          `yaml:"request_timeout"`
	FailoverThreshold int              `yaml:"failover_threshold"` // percent
	Clusters          [][]PolicyServer `yaml:"clusters,omitempty"`
}

// DefaultHCO has the vendor's documented defaults.
func DefaultHCO() HCO {
	return HCO{
		EnableFailover:    true,
		MinSocketsPerPort: 2,
		NewSocketStep:     2,
		MaxSocketsPerPort: 20,
		RequestTimeout:    Seconds(60 * time.Second),
		FailoverThreshold: 0,
	}
}

// UnmarshalYAML starts from the defaults so that a store lists only what it
// changes. It decodes through the caller's decoder (unmarshal), so the
// caller's strictness (unknown keys are errors) holds inside an HCO too.
func (h *HCO) UnmarshalYAML(unmarshal func(any) error) error {
	type plain HCO
	v := plain(DefaultHCO())
	if err := unmarshal(&v); err != nil {
		return err
	}
	*h = HCO(v)
	return nil
}

// Validate checks the socket parameters the way the agent needs them.
func (h HCO) Validate() error {
	var errs []error
	if h.Name == "" {
		errs = append(errs, errors.New("HCO has no name"))
	}
	if len(h.PolicyServers) == 0 && len(h.Clusters) == 0 {
		errs = append(errs, fmt.Errorf("HCO %q lists no policy server and no cluster", h.Name))
	}
	if h.MinSocketsPerPort < 1 {
		errs = append(errs, fmt.Errorf("HCO %q: min_sockets_per_port must be at least 1, got %d", h.Name, h.MinSocketsPerPort))
	}
	if h.NewSocketStep < 1 {
		errs = append(errs, fmt.Errorf("HCO %q: new_socket_step must be at least 1, got %d", h.Name, h.NewSocketStep))
	}
	if h.MaxSocketsPerPort < h.MinSocketsPerPort {
		errs = append(errs, fmt.Errorf("HCO %q: max_sockets_per_port %d is below min_sockets_per_port %d", h.Name, h.MaxSocketsPerPort, h.MinSocketsPerPort))
	}
	if h.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("HCO %q: request_timeout must be positive", h.Name))
	}
	if h.FailoverThreshold < 0 || h.FailoverThreshold > 100 {
		errs = append(errs, fmt.Errorf("HCO %q: failover_threshold must be a percentage from 0 to 100, got %d", h.Name, h.FailoverThreshold))
	}
	for i, c := range h.Clusters {
		if len(c) == 0 {
			errs = append(errs, fmt.Errorf("HCO %q: cluster %d is empty", h.Name, i+1))
		}
	}
	return errors.Join(errs...)
}

// Cache sizes the vendor documents per web server.
const (
	DefaultCacheSizeIIS    = 700
	DefaultCacheSizeApache = 750
)

// ACO is the Agent Configuration Object (DOMAIN.md section 2). A cache size
// of 0 turns that cache off, so every request sends IsProtected.
type ACO struct {
	Name                 string            `yaml:"name"`
	DefaultAgentName     string            `yaml:"default_agent_name"`
	AgentNames           []string          `yaml:"agent_names,omitempty"` // "name,IP"
	PSPollInterval       Seconds           `yaml:"ps_poll_interval"`
	MaxResourceCacheSize int               `yaml:"max_resource_cache_size"`
	ResourceCacheTimeout Seconds           `yaml:"resource_cache_timeout"`
	MaxSessionCacheSize  int               `yaml:"max_session_cache_size"`
	LogFile              bool              `yaml:"log_file"`
	LogFileName          string            `yaml:"log_file_name"`
	LogAppend            bool              `yaml:"log_append"`
	LogFileSize          int               `yaml:"log_file_size"` // MB
	LogLocalTime         bool              `yaml:"log_local_time"`
	TraceFile            bool              `yaml:"trace_file"`
	TraceFileName        string            `yaml:"trace_file_name"`
	TraceFileSize        int               `yaml:"trace_file_size"` // MB
	TraceConfigFile      string            `yaml:"trace_config_file"`
	AllowLocalConfig     bool              `yaml:"allow_local_config"`
	Extra                map[string]string `yaml:"extra,omitempty"`
}

// DefaultACO has the documented defaults; the cache sizes are IIS's.
func DefaultACO() ACO {
	return ACO{
		PSPollInterval:       Seconds(30 * time.Second),
		MaxResourceCacheSize: DefaultCacheSizeIIS,
		ResourceCacheTimeout: Seconds(600 * time.Second),
		MaxSessionCacheSize:  DefaultCacheSizeIIS,
		LogFile:              true,
		LogFileName:          "WA.log",
		LogAppend:            true,
		LogFileSize:          10,
		LogLocalTime:         true,
		TraceFileName:        "WATrace.log",
		TraceFileSize:        10,
	}
}

// UnmarshalYAML starts from the defaults, through the caller's decoder, as
// HCO's does.
func (a *ACO) UnmarshalYAML(unmarshal func(any) error) error {
	type plain ACO
	v := plain(DefaultACO())
	if err := unmarshal(&v); err != nil {
		return err
	}
	*a = ACO(v)
	return nil
}

// Validate checks what the agent relies on.
func (a ACO) Validate() error {
	var errs []error
	if a.Name == "" {
		errs = append(errs, errors.New("ACO has no name"))
	}
	if a.PSPollInterval < Seconds(time.Second) {
		errs = append(errs, fmt.Errorf("ACO %q: ps_poll_interval must be at least 1 second", a.Name))
	}
	if a.MaxResourceCacheSize < 0 || a.MaxSessionCacheSize < 0 {
		errs = append(errs, fmt.Errorf("ACO %q: cache sizes must not be negative", a.Name))
	}
	return errors.Join(errs...)
}
