// Package lab describes a topology of Policy Servers and a web server on
// loopback addresses, starts it as real processes, and collects what they
// recorded.
package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/agentlab/agentlab/yamlfile"

	"github.com/agentlab/agentlab/labs"
	"github.com/agentlab/agentlab/trace"
)

// Lab is a lab file (labs/*.yaml).
type Lab struct {
	Name          string            `yaml:"name"`
	Description   string            `yaml:"description"`
	Hosts         map[string]string `yaml:"hosts"`
	PolicyServers []PolicyServer    `yaml:"policy_servers"`
	Store         string            `yaml:"store"`
	WebServer     WebServer         `yaml:"web_server"`
	Admin         Credentials       `yaml:"admin"`
	User          Credentials       `yaml:"user"`
	PollInterval  Duration          `yaml:"poll_interval"`
	// Workload is the lab's default load; agentlab run's flags override it.
	Workload WorkloadSpec `yaml:"workload"`
	// Faults are applied to the Policy Servers during the run (lab/faults_*.go).
	Faults []Fault `yaml:"faults"`
	// Metrics has every Policy Server and the web server serve
	// Prometheus's /metrics (smps and hla --metrics on their lab
	// address), which the lab scrapes once a second into the run's
	// metrics.jsonl (lab/metrics.go). Off unless asked for: a lab that
	// does not chart the servers' queues has no use for it.
	Metrics bool `yaml:"metrics,omitempty"`
	// Remedies are the lab's second part (lab/remedies.go): each is a run
	// of the lab with one change, compared in a table.
	Remedies []Remedy `yaml:"remedies,omitempty"`

	// Dir is the lab file's folder: a relative store path is read from there.
	Dir string `yaml:"-"`
	// Embedded: the lab is one of the binary's (labs/), and so is its
	// relative store, which a run writes into its folder.
	Embedded bool `yaml:"-"`
	// File names the lab in errors.
	File string `yaml:"-"`
}

// PolicyServer is one smps process of the lab.
type PolicyServer struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// MaxConns is the server's connection limit (smps --max-conns; the
	// console's MaxConnections): past it a connection is refused with
	// the vendor's log line. 0 leaves smps's default.
	MaxConns int `yaml:"max_conns,omitempty"`
	// Threads is how many worker threads evaluate requests (smps
	// --threads; the console's Maximum Threads). 0 leaves smps's default.
	Threads int `yaml:"threads,omitempty"`
}

// args are the smps flags of the server's own settings.
func (p PolicyServer) args() []string {
	var out []string
	if p.MaxConns > 0 {
		out = append(out, "--max-conns", strconv.Itoa(p.MaxConns))
	}
	if p.Threads > 0 {
		out = append(out, "--threads", strconv.Itoa(p.Threads))
	}
	return out
}

// Addr is host:port.
func (p PolicyServer) Addr() string { return fmt.Sprintf("%s:%d", p.Host, p.Port) }

// WebServer is the agent host.
type WebServer struct {
	Host  string `yaml:"host"`
	Model string `yaml:"model"`
	// Apache model: the children, their MPM, recycling, and where
	// they take the ACO from.
	Workers             int    `yaml:"workers,omitempty"`
	MPM                 string `yaml:"mpm,omitempty"`
	MaxRequestsPerChild int    `yaml:"max_requests_per_child,omitempty"`
	ACOFromLLAWP        bool   `yaml:"aco_from_llawp,omitempty"`
	// HealthPoll is how often the agents look for Policy Servers that
	// came back (hla and llawp --health-poll); 0 leaves their default,
	// the vendor's 30 s.
	HealthPoll Duration `yaml:"health_poll,omitempty"`
	// AgentCache turns the agent cache of the web server's ACO on or off
	// in the store the Policy Servers load (agentcache.go): "on", "off",
	// or "" for the ACO as the store has it. The seed's use case (a) is a
	// page load with the cache on; (b), every refresh with it off.
	AgentCache        string   `yaml:"agent_cache,omitempty"`
	HTTPPort          int      `yaml:"http_port"`
	TrustedHost       string   `yaml:"trusted_host"`
	HostConfigObject  string   `yaml:"host_config_object"`
	AgentConfigObject string   `yaml:"agent_config_object"`
	Bootstrap         []string `yaml:"bootstrap"`
}

// Credentials are a name and a password.
type Credentials struct {
	User     string `yaml:"user"`
	Name     string `yaml:"name"`
	Password string `yaml:"password"`
}

// Login is the account name, whichever key the file used.
func (c Credentials) Login() string {
	if c.User != "" {
		return c.User
	}
	return c.Name
}

// Duration reads "5s", "30s", "1m".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n ast.Node) error {
	text, ok := yamlfile.Scalar(n)
	if !ok {
		return yamlfile.Errorf(n, "want a duration such as 5s, got a %s", n.Type().YAMLName())
	}
	v, err := time.ParseDuration(text)
	if err != nil || v <= 0 {
		return yamlfile.Errorf(n, "%q is not a positive duration such as 5s", text)
	}
	*d = Duration(v)
	return nil
}

// Seed is the embedded default lab.
func Seed() (*Lab, error) { return Parse("labs/seed.yaml (embedded)", "", labs.SeedLab) }

// Open is the lab at path; with no such file, the embedded lab of that
// name; the embedded seed lab when path is "".
func Open(path string) (*Lab, error) {
	if path == "" {
		return Seed()
	}
	// A name with no file of that name is one of the embedded labs
	// (failover, roundrobin, cluster): they run with no file on disk.
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && !strings.ContainsRune(path, filepath.Separator) {
		if strings.TrimSuffix(path, ".yaml") == "seed" {
			return Seed()
		}
		data, serr := labs.Scenario(path)
		if serr != nil {
			return nil, fmt.Errorf("lab file %s: no such file, and %w", path, serr)
		}
		l, err := Parse("labs/"+strings.TrimSuffix(path, ".yaml")+".yaml (embedded)", "", data)
		if l != nil {
			l.Embedded = true
		}
		return l, err
	}
	return Load(path)
}

// Load reads a lab file.
func Load(path string) (*Lab, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lab file: %w", err)
	}
	return Parse(path, filepath.Dir(path), data)
}

// Parse reads a lab from YAML; file names it in errors.
func Parse(file, dir string, data []byte) (*Lab, error) {
	l := &Lab{}
	// Errors are file:line:col: message, one per item of a list at most.
	f, err := yamlfile.Parse(file, data)
	if err != nil {
		return nil, err
	}
	if err := f.DecodeEach(l); err != nil {
		return nil, err
	}
	l.Dir, l.File = dir, file
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return l, nil
}

// Validate checks that every name resolves and every address is loopback:
// a lab never sends a packet off this machine.
func (l *Lab) Validate() error {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	for name, ip := range l.Hosts {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			bad("host %s: %q is not an IP address", name, ip)
		} else if !a.IsLoopback() {
			bad("host %s: %s is not a loopback address (a lab stays in 127.0.0.0/8)", name, ip)
		}
	}
	known := func(h string) bool { _, ok := l.Hosts[h]; return ok }
	if len(l.PolicyServers) == 0 {
		bad("no policy_servers")
	}
	for _, p := range l.PolicyServers {
		if !known(p.Host) {
			bad("policy server %s is not in hosts", p.Host)
		}
		if p.Port < 1 || p.Port > 65535 {
			bad("policy server %s: port %d", p.Host, p.Port)
		}
		if p.MaxConns < 0 || p.Threads < 0 {
			bad("policy server %s: max_conns and threads must not be negative", p.Host)
		}
	}
	w := l.WebServer
	if !known(w.Host) {
		bad("web_server.host %q is not in hosts", w.Host)
	}
	if w.Model == "" {
		l.WebServer.Model = "iis"
	} else if w.Model != "iis" && w.Model != "apache" {
		bad("web_server.model %q: want iis or apache", w.Model)
	}
	if w.Workers < 0 || w.MaxRequestsPerChild < 0 {
		bad("web_server.workers and max_requests_per_child must not be negative")
	}
	if w.MPM != "" && w.MPM != "prefork" && w.MPM != "worker" {
		bad("web_server.mpm %q: want prefork or worker", w.MPM)
	}
	if err := CheckAgentCache(w.AgentCache); err != nil {
		bad("web_server.agent_cache: %v", err)
	}
	for _, f := range []struct{ k, v string }{{"trusted_host", w.TrustedHost}, {"host_config_object", w.HostConfigObject}, {"agent_config_object", w.AgentConfigObject}} {
		if f.v == "" {
			bad("web_server.%s is missing", f.k)
		}
	}
	if len(w.Bootstrap) == 0 {
		bad("web_server.bootstrap names no policy server")
	}
	for _, b := range w.Bootstrap {
		if _, err := l.bootstrapServer(b); err != nil {
			bad("web_server.bootstrap: %v", err)
		}
	}
	if l.Admin.Login() == "" || l.User.Login() == "" {
		bad("admin and user need a name and a password")
	}
	if l.PollInterval == 0 {
		l.PollInterval = Duration(5 * time.Second)
	}
	if err := l.Workload.validate(); err != nil {
		bad("workload: %v", err)
	}
	// Fault errors carry their own line: file:line: message, one each.
	var out []error
	if len(errs) > 0 {
		out = append(out, fmt.Errorf("%s: %s", l.File, strings.Join(errs, "; ")))
	}
	out = append(out, l.validateFaults()...)
	return errors.Join(append(out, l.validateRemedies()...)...)
}

// bootstrapServer finds the lab server a bootstrap entry names ("host" or "host:port").
func (l *Lab) bootstrapServer(s string) (PolicyServer, error) {
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	for _, p := range l.PolicyServers {
		if p.Host == host && (port == "" || fmt.Sprint(p.Port) == port) {
			return p, nil
		}
	}
	return PolicyServer{}, fmt.Errorf("%s is not one of the lab's policy servers", s)
}

// HostsMap is the lab's resolver, for the processes it starts.
func (l *Lab) HostsMap() (*trace.Hosts, error) {
	m := map[string][]string{}
	names := make([]string, 0, len(l.Hosts))
	for n := range l.Hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		m[l.Hosts[n]] = append(m[l.Hosts[n]], n)
	}
	return trace.NewHosts(m)
}

// ServerHosts are the names of the lab's Policy Servers.
func (l *Lab) ServerHosts() []string {
	out := make([]string, len(l.PolicyServers))
	for i, p := range l.PolicyServers {
		out[i] = p.Host
	}
	return out
}
