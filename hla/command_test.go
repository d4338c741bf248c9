package hla

import (
	"slices"
	"testing"
	"time"
)

func TestProcessIdentity(t *testing.T) {
	tests := []struct {
		model    string
		child    bool
		procName string
		want     Identity
	}{
		{ModelIIS, false, "", Identity{"svchost.exe", RoleWAS}},
		{ModelIIS, true, "", Identity{"w3wp.exe", RoleWorker}},
		{ModelApache, false, "", Identity{"httpd", RoleHTTPDParent}},
		{ModelApache, true, "", Identity{"httpd", RoleWorker}},
		// --proc-name names the workers, never the parent.
		{ModelIIS, true, "w3wp2.exe", Identity{"w3wp2.exe", RoleWorker}},
		{ModelIIS, false, "w3wp2.exe", Identity{"svchost.exe", RoleWAS}},
	}
	for _, tt := range tests {
		if got := ProcessIdentity(tt.model, tt.child, tt.procName); got != tt.want {
			t.Errorf("ProcessIdentity(%s, child %v, %q) = %+v, want %+v", tt.model, tt.child, tt.procName, got, tt.want)
		}
	}
}

// TestNewLLAWPConfig: what the web server's command line passes on to its
// LLAWP's, as the recorded runs show it in the LLAWP's command line.
func TestNewLLAWPConfig(t *testing.T) {
	lab := LLAWPOptions{Path: "bin/llawp", WebAgent: "out/WebAgent.conf", Out: "out", Trace: "out", TracePayload: true,
		Hosts: "out/hosts", Source: "127.0.0.11", Poll: 5 * time.Second, HealthPoll: -time.Second}
	with := func(o LLAWPOptions, change func(*LLAWPOptions)) LLAWPOptions { change(&o); return o }
	tests := []struct {
		name     string
		o        LLAWPOptions
		wantName string
		want     []string
	}{
		{"what a lab passes for IIS", with(lab, func(o *LLAWPOptions) { o.Model = ModelIIS }), "LLAWP.exe",
			[]string{"--webagent", "out/WebAgent.conf", "--out", "out", "--trace", "out", "--trace-payload", "--hosts", "out/hosts",
				"--source", "127.0.0.11", "--poll", "5s", "--health-poll=-1s", "--proc-name", "LLAWP.exe"}},
		{"Apache: the LLAWP lingers forever unless told", with(lab, func(o *LLAWPOptions) { o.Model = ModelApache }), "LLAWP",
			[]string{"--webagent", "out/WebAgent.conf", "--out", "out", "--trace", "out", "--trace-payload", "--hosts", "out/hosts",
				"--source", "127.0.0.11", "--poll", "5s", "--health-poll=-1s", "--linger=-1ns", "--proc-name", "LLAWP"}},
		{"Apache with a linger of its own", LLAWPOptions{Model: ModelApache, Path: "llawp", WebAgent: "WebAgent.conf", Linger: time.Second}, "LLAWP",
			[]string{"--webagent", "WebAgent.conf", "--linger", "1s", "--proc-name", "LLAWP"}},
		{"no trace folder: no payload either, and no poll override", LLAWPOptions{Model: ModelIIS, Path: "llawp", WebAgent: "WebAgent.conf",
			TracePayload: true, Poll: -time.Second}, "LLAWP.exe",
			[]string{"--webagent", "WebAgent.conf", "--proc-name", "LLAWP.exe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewLLAWPConfig(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if c.Path != tt.o.Path || c.Name != tt.wantName {
				t.Errorf("path %q, name %q; want %q, %q", c.Path, c.Name, tt.o.Path, tt.wantName)
			}
			if !slices.Equal(c.Args, tt.want) {
				t.Errorf("args\n%q\nwant\n%q", c.Args, tt.want)
			}
		})
	}
}
