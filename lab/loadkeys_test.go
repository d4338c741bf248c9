package lab

import (
	"slices"
	"strings"
	"testing"
)

// TestLoadKeys: a Policy Server's max_conns and threads become smps's
// --max-conns and --threads, and metrics: true gives smps and hla a
// --metrics address on their own lab address; without the keys no flag
// is passed, so that a lab written before them starts the same processes.
func TestLoadKeys(t *testing.T) {
	base := `name: x
hosts: {wa1: 127.0.0.11, ps1: 127.0.0.21, ps2: 127.0.0.22}
policy_servers: [{host: ps1, port: 44443, max_conns: 12, threads: 2}, {host: ps2, port: 44443, threads: 16}]
web_server: {host: wa1, http_port: 8080, trusted_host: t, host_config_object: h, agent_config_object: a, bootstrap: [ps1], model: apache, workers: 6}
admin: {user: a, password: b}
user: {name: u, password: p}
`
	cases := []struct {
		name, lab           string
		ps1, ps2            []string
		webMetrics, metrics string
	}{
		{"no metrics", base, []string{"--max-conns", "12", "--threads", "2"}, []string{"--threads", "16"}, "", ""},
		{"metrics on", base + "metrics: true\n", []string{"--max-conns", "12", "--threads", "2"}, []string{"--threads", "16"}, "127.0.0.11:0", "on"},
		{"metrics off", base + "metrics: false\n", []string{"--max-conns", "12", "--threads", "2"}, []string{"--threads", "16"}, "", ""},
		{"no keys", strings.Replace(base, ", max_conns: 12, threads: 2}, {host: ps2, port: 44443, threads: 16}", "}, {host: ps2, port: 44443}", 1), nil, nil, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := Parse("lab.yaml", "", []byte(c.lab))
			if err != nil {
				t.Fatal(err)
			}
			if got := l.PolicyServers[0].args(); !slices.Equal(got, c.ps1) {
				t.Errorf("ps1: %q, want %q", got, c.ps1)
			}
			if got := l.PolicyServers[1].args(); !slices.Equal(got, c.ps2) {
				t.Errorf("ps2: %q, want %q", got, c.ps2)
			}
			if l.Metrics != (c.metrics == "on") {
				t.Errorf("metrics %v", l.Metrics)
			}
			r := &Run{Lab: l, Opts: Options{Out: t.TempDir()}}
			args := r.webServerArgs("127.0.0.11:8080")
			i := slices.Index(args, "--metrics")
			switch {
			case c.webMetrics == "" && i >= 0:
				t.Errorf("hla gets --metrics with no metrics: %q", args)
			case c.webMetrics != "" && (i < 0 || i+1 >= len(args) || args[i+1] != c.webMetrics):
				t.Errorf("hla args %q, want --metrics %s", args, c.webMetrics)
			}
			if w := slices.Index(args, "--workers"); w < 0 || args[w+1] != "6" {
				t.Errorf("hla args %q, want --workers 6 (six agent processes)", args)
			}
		})
	}
}
