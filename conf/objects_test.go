package conf

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/agentlab/agentlab/yamlfile"
)

func TestParsePolicyServer(t *testing.T) {
	tests := []struct {
		in   string
		want PolicyServer
		err  string
	}{
		{"smps1.shared.lab", PolicyServer{"smps1.shared.lab", 44441, 44442, 44443}, ""},
		{"  smps1.shared.lab  ", PolicyServer{"smps1.shared.lab", 44441, 44442, 44443}, ""},
		{"smps2.shared.lab,44441,44442,44443", PolicyServer{"smps2.shared.lab", 44441, 44442, 44443}, ""},
		{"10.0.0.1, 1 , 2 , 3 ", PolicyServer{"10.0.0.1", 1, 2, 3}, ""},
		{"h,0,0,44443", PolicyServer{"h", 0, 0, 44443}, ""},
		{"h,44441,0,0", PolicyServer{"h", 44441, 0, 0}, ""},
		{"h,0,0,65535", PolicyServer{"h", 0, 0, 65535}, ""},
		{"", PolicyServer{}, `policy server "": empty host name`},
		{",1,2,3", PolicyServer{}, `policy server ",1,2,3": empty host name`},
		{"a b,1,2,3", PolicyServer{}, `policy server "a b,1,2,3": host name "a b" has spaces or quotes`},
		{"h,1,2", PolicyServer{}, `policy server "h,1,2": want host,accounting,authentication,authorization ports, got 3 fields`},
		{"h,1,2,3,4", PolicyServer{}, `policy server "h,1,2,3,4": want host,accounting,authentication,authorization ports, got 5 fields`},
		{"h,1,2,x", PolicyServer{}, `policy server "h,1,2,x": port "x" is not a number from 0 to 65535`},
		{"h,1,2,-1", PolicyServer{}, `policy server "h,1,2,-1": port "-1" is not a number from 0 to 65535`},
		{"h,1,2,65536", PolicyServer{}, `policy server "h,1,2,65536": port "65536" is not a number from 0 to 65535`},
		{"h,,,", PolicyServer{}, `policy server "h,,,": port "" is not a number from 0 to 65535`},
		{"h,0,0,0", PolicyServer{}, `policy server "h,0,0,0": every port is 0 (none)`},
	}
	for _, tt := range tests {
		got, err := ParsePolicyServer(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParsePolicyServer(%q) error %v, want %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePolicyServer(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		// String gives a form that parses back to the same server.
		if again, err := ParsePolicyServer(got.String()); err != nil || again != got {
			t.Errorf("%q: String %q parses to %+v, %v", tt.in, got.String(), again, err)
		}
	}
}

func TestPolicyServerPortAddr(t *testing.T) {
	for _, tt := range []struct {
		ps   PolicyServer
		port int
	}{
		{PolicyServer{"h", 44441, 44442, 44443}, 44443},
		{PolicyServer{"h", 44441, 44442, 0}, 44442},
		{PolicyServer{"h", 44441, 0, 0}, 44441},
		{PolicyServer{"h", 0, 0, 0}, 0},
	} {
		if got := tt.ps.Port(); got != tt.port {
			t.Errorf("%v.Port() = %d, want %d", tt.ps, got, tt.port)
		}
	}
	if got := (PolicyServer{"smps1.shared.lab", 0, 0, 44443}).Addr(); got != "smps1.shared.lab:44443" {
		t.Errorf("Addr = %q", got)
	}
}

func TestPolicyServerYAML(t *testing.T) {
	var v struct {
		PS []PolicyServer `yaml:"ps"`
	}
	if err := yamlfile.Decode("t.yaml", []byte("ps:\n  - smps1.shared.lab\n  - h,0,0,44443\n"), &v); err != nil {
		t.Fatal(err)
	}
	want := []PolicyServer{{"smps1.shared.lab", 44441, 44442, 44443}, {"h", 0, 0, 44443}}
	if !reflect.DeepEqual(v.PS, want) {
		t.Errorf("got %+v", v.PS)
	}
	out, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); got != "ps:\n- smps1.shared.lab,44441,44442,44443\n- h,0,0,44443\n" {
		t.Errorf("marshal = %q", got)
	}
	err = yamlfile.Decode("t.yaml", []byte("ps:\n  - h,1,2\n"), &v)
	if err == nil || !strings.Contains(err.Error(), "t.yaml:2:5: policy server \"h,1,2\"") {
		t.Errorf("bad server: %v", err)
	}
	err = yamlfile.Decode("t.yaml", []byte("ps:\n  - [a]\n"), &v)
	if err == nil || !strings.Contains(err.Error(), "t.yaml:2:5: policy server") {
		t.Errorf("not a string: %v", err)
	}
}

func TestSecondsYAML(t *testing.T) {
	var v struct {
		S Seconds `yaml:"s"`
	}
	if err := yamlfile.Decode("t.yaml", []byte("s: 90\n"), &v); err != nil || v.S.D() != 90*time.Second {
		t.Errorf("s: 90 = %v, %v", v.S.D(), err)
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "s: 90\n" {
		t.Errorf("marshal = %q, %v", out, err)
	}
	for _, in := range []string{"s: -1\n", "s: 10s\n", "s: [1]\n"} {
		if err := yamlfile.Decode("t.yaml", []byte(in), &v); err == nil || !strings.Contains(err.Error(), "t.yaml:1:4:") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestHCODefaults(t *testing.T) {
	var h HCO
	if err := yamlfile.Decode("t.yaml", []byte("name: hco.smps1\npolicy_servers: [smps1.shared.lab]\n"), &h); err != nil {
		t.Fatal(err)
	}
	want := DefaultHCO()
	want.Name = "hco.smps1"
	want.PolicyServers = []PolicyServer{{"smps1.shared.lab", 44441, 44442, 44443}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got  %+v\nwant %+v", h, want)
	}
	if h.MinSocketsPerPort != 2 || h.NewSocketStep != 2 || h.MaxSocketsPerPort != 20 || !h.EnableFailover ||
		h.RequestTimeout.D() != 60*time.Second || h.FailoverThreshold != 0 {
		t.Errorf("defaults differ from DOMAIN.md: %+v", h)
	}
	if err := h.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// Values given override the defaults; the rest stay.
	if err := yamlfile.Decode("t.yaml", []byte("name: x\nenable_failover: false\nmax_sockets_per_port: 5\nclusters: [[a], [b, c]]\n"), &h); err != nil {
		t.Fatal(err)
	}
	if h.EnableFailover || h.MaxSocketsPerPort != 5 || h.MinSocketsPerPort != 2 || len(h.Clusters) != 2 || len(h.Clusters[1]) != 2 {
		t.Errorf("got %+v", h)
	}
	if err := h.Validate(); err != nil {
		t.Errorf("Validate with clusters only: %v", err)
	}
}

func TestHCOValidate(t *testing.T) {
	ok := DefaultHCO()
	ok.Name = "hco"
	ok.PolicyServers = []PolicyServer{{"h", 0, 0, 44443}}
	tests := []struct {
		edit func(*HCO)
		want string
	}{
		{func(h *HCO) { h.Name = "" }, "HCO has no name"},
		{func(h *HCO) { h.PolicyServers = nil }, `HCO "hco" lists no policy server and no cluster`},
		{func(h *HCO) { h.MinSocketsPerPort = 0 }, `HCO "hco": min_sockets_per_port must be at least 1, got 0`},
		{func(h *HCO) { h.NewSocketStep = 0 }, `HCO "hco": new_socket_step must be at least 1, got 0`},
		{func(h *HCO) { h.MaxSocketsPerPort = 1 }, `HCO "hco": max_sockets_per_port 1 is below min_sockets_per_port 2`},
		{func(h *HCO) { h.RequestTimeout = 0 }, `HCO "hco": request_timeout must be positive`},
		{func(h *HCO) { h.FailoverThreshold = 101 }, `HCO "hco": failover_threshold must be a percentage from 0 to 100, got 101`},
		{func(h *HCO) { h.FailoverThreshold = -1 }, `HCO "hco": failover_threshold must be a percentage from 0 to 100, got -1`},
		{func(h *HCO) { h.Clusters = [][]PolicyServer{{{"a", 0, 0, 1}}, {}} }, `HCO "hco": cluster 2 is empty`},
		{func(h *HCO) { h.Name = ""; h.NewSocketStep = 0 }, "HCO has no name\nHCO \"\": new_socket_step must be at least 1, got 0"},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid HCO: %v", err)
	}
	for _, tt := range tests {
		h := ok
		tt.edit(&h)
		if err := h.Validate(); err == nil || err.Error() != tt.want {
			t.Errorf("Validate = %v, want %s", err, tt.want)
		}
	}
}

func TestACODefaults(t *testing.T) {
	var a ACO
	if err := yamlfile.Decode("t.yaml", []byte("name: aco.wa1\nmax_resource_cache_size: 0\nextra:\n  BadURLChars: '//,./'\n"), &a); err != nil {
		t.Fatal(err)
	}
	want := DefaultACO()
	want.Name = "aco.wa1"
	want.MaxResourceCacheSize = 0 // 0 turns the cache off, so it must not be replaced by the default
	want.Extra = map[string]string{"BadURLChars": "//,./"}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got  %+v\nwant %+v", a, want)
	}
	d := DefaultACO()
	if d.PSPollInterval.D() != 30*time.Second || d.ResourceCacheTimeout.D() != 600*time.Second ||
		d.MaxResourceCacheSize != DefaultCacheSizeIIS || d.MaxSessionCacheSize != DefaultCacheSizeIIS {
		t.Errorf("defaults differ from DOMAIN.md: %+v", d)
	}
	if err := a.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestACOValidate(t *testing.T) {
	ok := DefaultACO()
	ok.Name = "aco"
	tests := []struct {
		edit func(*ACO)
		want string
	}{
		{func(a *ACO) { a.Name = "" }, "ACO has no name"},
		{func(a *ACO) { a.PSPollInterval = Seconds(999 * time.Millisecond) }, `ACO "aco": ps_poll_interval must be at least 1 second`},
		{func(a *ACO) { a.MaxSessionCacheSize = -1 }, `ACO "aco": cache sizes must not be negative`},
		{func(a *ACO) { a.MaxResourceCacheSize = -1 }, `ACO "aco": cache sizes must not be negative`},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid ACO: %v", err)
	}
	for _, tt := range tests {
		a := ok
		tt.edit(&a)
		if err := a.Validate(); err == nil || err.Error() != tt.want {
			t.Errorf("Validate = %v, want %s", err, tt.want)
		}
	}
}

func TestSecondsYAMLInHCO(t *testing.T) {
	var h HCO
	err := yamlfile.Decode("t.yaml", []byte("name: x\nrequest_timeout: -5\n"), &h)
	if err == nil || !strings.Contains(err.Error(), "t.yaml:2:18: seconds must not be negative, got -5") {
		t.Errorf("negative request_timeout: %v", err)
	}
}

// TestObjectsYAMLErrors: the HCO and ACO decode through the caller's strict
// decoder (an unknown key is an error inside them too), and every problem is
// placed at its line and column.
func TestObjectsYAMLErrors(t *testing.T) {
	tests := []struct {
		name, in string
		into     func() any
		want     string
	}{
		{"unknown HCO key", "name: x\nmin_socket_per_port: 3\n", func() any { return &HCO{} }, `t.yaml:2:1: unknown field "min_socket_per_port"`},
		{"unknown ACO key", "name: x\npspollinterval: 3\n", func() any { return &ACO{} }, `t.yaml:2:1: unknown field "pspollinterval"`},
		{"fractional seconds", "name: x\nrequest_timeout: 1.5\n", func() any { return &HCO{} }, `t.yaml:2:18: want a whole number of seconds, got "1.5"`},
		{"seconds as a list", "name: x\nrequest_timeout: [1]\n", func() any { return &HCO{} }, `t.yaml:2:18: want a whole number of seconds, got a sequence`},
		{"server as a mapping", "name: x\npolicy_servers:\n  - {host: a}\n", func() any { return &HCO{} }, `t.yaml:3:5: policy server: want`},
		{"wrong type", "name: x\nmin_sockets_per_port: many\n", func() any { return &HCO{} }, `t.yaml:2:23: min_sockets_per_port: want a whole number, got "many"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := yamlfile.Decode("t.yaml", []byte(tt.in), tt.into())
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %v, want one starting %q", err, tt.want)
			}
		})
	}
}
