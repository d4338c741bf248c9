package lab

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/labs"
)

// TestBuildupLab: labs/buildup.yaml is a build-up as issue 12 describes
// it: one Policy Server with few threads and a low limit, a few web
// servers' worth of agent processes, metrics scraped, its own store with
// the HCO it names and a directory: section, the slow directory partway
// through the workload, and the four remedies.
func TestBuildupLab(t *testing.T) {
	data, err := os.ReadFile("../labs/buildup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse("labs/buildup.yaml", "../labs", data)
	if err != nil {
		t.Fatal(err)
	}
	ps := l.PolicyServers
	if len(ps) != 1 || ps[0].Threads != 2 || ps[0].MaxConns != 16 || !l.Metrics {
		t.Errorf("policy servers %+v, metrics %v", ps, l.Metrics)
	}
	if w := l.WebServer; w.Model != "apache" || w.Workers < 6 {
		t.Errorf("web server %+v: want a few web servers' worth of agent processes", w)
	}
	if len(l.Faults) == 0 || l.Faults[0].At <= 0 || l.Faults[0].At >= time.Duration(l.Workload.Duration) {
		t.Errorf("faults %+v: want the directory slow partway through the %s workload", l.Faults, time.Duration(l.Workload.Duration))
	}
	if len(l.Remedies) != 4 {
		t.Errorf("remedies %+v", l.Remedies)
	}
	store, err := labs.Store(l.Store)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- name: " + l.WebServer.HostConfigObject + "\n", "- name: " + l.WebServer.AgentConfigObject + "\n", "\ndirectory: {latency: 20ms"} {
		if !strings.Contains(string(store), want) {
			t.Errorf("labs/%s lacks %q", l.Store, want)
		}
	}
}

// TestEmbeddedStore: an embedded lab's relative store is written into the
// run's folder from the binary, not looked for beside the working folder.
func TestEmbeddedStore(t *testing.T) {
	l, err := Parse("x.yaml (embedded)", "", []byte(`name: x
hosts: {wa1: 127.0.0.11, ps1: 127.0.0.21}
policy_servers: [{host: ps1, port: 44443}]
store: buildup-store.yaml
web_server: {host: wa1, http_port: 8080, trusted_host: t, host_config_object: h, agent_config_object: a, bootstrap: [ps1]}
admin: {user: a, password: b}
user: {name: u, password: p}
`))
	if err != nil {
		t.Fatal(err)
	}
	l.Embedded = true
	r := &Run{Lab: l, Opts: Options{Out: t.TempDir()}}
	if err := r.writeStore(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(r.store)
	want, _ := labs.Store("buildup-store.yaml")
	if err != nil || string(got) != string(want) || !strings.HasPrefix(r.store, r.Opts.Out) {
		t.Errorf("store %s: %v", r.store, err)
	}
	l.Store = "nosuch.yaml"
	if err := r.writeStore(); err == nil || !strings.Contains(err.Error(), "nosuch.yaml") {
		t.Errorf("a missing embedded store: %v", err)
	}
}
