package lab

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/trace"
)

func TestSeed(t *testing.T) {
	l, err := Seed()
	if err != nil {
		t.Fatal(err)
	}
	// The seed's use case (b): the agent cache off.
	if l.WebServer.Host != "wa1.shared.lab" || l.WebServer.Bootstrap[0] != "smps2.shared.lab" || len(l.PolicyServers) != 2 || l.WebServer.AgentCache != AgentCacheOff {
		t.Errorf("seed lab: %+v", l)
	}
	h, err := l.HostsMap()
	if err != nil {
		t.Fatal(err)
	}
	if ip, _ := h.Lookup("smps1.shared.lab"); ip != "127.0.0.21" {
		t.Errorf("smps1.shared.lab resolves to %q", ip)
	}
	if n := h.Name("127.0.0.11:50134"); n != "wa1.shared.lab" {
		t.Errorf("127.0.0.11 is named %q", n)
	}
}

func TestParseRejects(t *testing.T) {
	base := `name: x
hosts: {wa1: 127.0.0.11, ps1: 127.0.0.21}
policy_servers: [{host: ps1, port: 44443}]
web_server: {host: wa1, http_port: 8080, trusted_host: t, host_config_object: h, agent_config_object: a, bootstrap: [ps1]}
admin: {user: a, password: b}
user: {name: u, password: p}
`
	if _, err := Parse("lab.yaml", "", []byte(base)); err != nil {
		t.Fatalf("the base lab is refused: %v", err)
	}
	cases := []struct{ name, from, to, want string }{
		{"not loopback", "127.0.0.21", "10.0.0.1", "not a loopback address"},
		{"not an address", "127.0.0.21", "smps", "not an IP address"},
		{"unknown server host", "{host: ps1, port", "{host: ps9, port", "ps9 is not in hosts"},
		{"bad port", "port: 44443", "port: 0", "port 0"},
		{"bad model", "http_port: 8080", "http_port: 8080, model: nginx", "want iis or apache"},
		{"bad mpm", "http_port: 8080", "http_port: 8080, mpm: event", "want prefork or worker"},
		{"bad agent cache", "http_port: 8080", "http_port: 8080, agent_cache: maybe", `agent_cache: "maybe": want on or off`},
		{"bootstrap not a lab server", "bootstrap: [ps1]", "bootstrap: [ps2]", "not one of the lab's policy servers"},
		{"missing trusted host", "trusted_host: t, ", "", "trusted_host is missing"},
		{"unknown key", "name: x", "name: x\nbogus: 1", "bogus"},
		{"bad poll", "name: x", "name: x\npoll_interval: soon", "positive duration"},
		{"negative max_conns", "port: 44443", "port: 44443, max_conns: -1", "max_conns and threads must not be negative"},
		{"negative threads", "port: 44443", "port: 44443, threads: -2", "max_conns and threads must not be negative"},
		{"max_conns not a number", "port: 44443", "port: 44443, max_conns: many", "max_conns"},
		{"metrics not a bool", "name: x", "name: x\nmetrics: sometimes", "metrics"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("lab.yaml", "", []byte(strings.Replace(base, c.from, c.to, 1)))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "lab.yaml") {
				t.Errorf("error %v, want one naming lab.yaml and saying %q", err, c.want)
			}
		})
	}
}

// TestWorkload: a page load answers the Basic challenge once, then rides on
// the cookie; a failing page is counted with its reason.
func TestWorkload(t *testing.T) {
	var challenges atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/broken/" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		if c, err := r.Cookie("SMSESSION"); err == nil && c.Value == "ok" {
			return
		}
		if u, p, ok := r.BasicAuth(); ok && u == "user1" && p == "pw" {
			http.SetCookie(w, &http.Cookie{Name: "SMSESSION", Value: "ok", Path: "/"})
			return
		}
		challenges.Add(1)
		w.Header().Set("WWW-Authenticate", `Basic realm="r"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	res := Workload{BaseURL: srv.URL, User: "user1", Password: "pw", Paths: []string{"/protected/"}, Requests: 6}.Run(context.Background())
	if res.Sent != 6 || res.Succeeded != 6 || res.Failed != 0 || res.Challenges != 1 || challenges.Load() != 1 {
		t.Errorf("result %+v, server challenges %d", res, challenges.Load())
	}
	if res.Percentile(50) <= 0 || res.Percentile(99) < res.Percentile(50) {
		t.Errorf("percentiles p50 %s p99 %s", res.Percentile(50), res.Percentile(99))
	}
	res = Workload{BaseURL: srv.URL, User: "user1", Password: "pw", Paths: []string{"/broken/"}, Requests: 2, Concurrency: 2}.Run(context.Background())
	if res.Failed != 2 || len(res.Errors) != 2 || !strings.Contains(res.Errors[0], "403") {
		t.Errorf("result %+v", res)
	}
}

// TestProc: a process is ready at its ready notice, stops on SIGTERM, and a
// process that exits before it is ready says so.
func TestProc(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ready := notice.HLAServing
	// The line a web server prints, as notice writes it; and one that
	// reads alike but is not a notice, which must not count.
	serving := notice.Notice{Prog: notice.ProgHLA, Kind: notice.Serving, Addr: "http://x:1"}.String()
	script := fmt.Sprintf("echo '%s: %s soon'; echo '%s'; exec sleep 30", notice.ProgHLA, notice.Serving, serving)
	deaths := make(chan *Proc, 1)
	p, err := Start(ctx, ProcSpec{Name: "sleeper", Bin: "/bin/sh", Args: []string{"-c", script},
		Ready: ready, OnDeath: func(p *Proc) { deaths <- p }})
	if err != nil {
		t.Fatal(err)
	}
	if out := p.Stdout(); len(out) < 2 || out[1] != serving {
		t.Errorf("stdout %q", out)
	}
	if err := p.Stop(5 * time.Second); err == nil || !strings.Contains(err.Error(), "sleeper") {
		t.Errorf("stop of a process killed by SIGTERM: %v", err)
	}
	select {
	case d := <-deaths:
		t.Errorf("the lab's own stop of %s was taken for a death", d.Name)
	default:
	}
	_, err = Start(ctx, ProcSpec{Name: "quitter", Bin: "/bin/sh", Args: []string{"-c", "exit 3"}, Ready: ready,
		OnDeath: func(p *Proc) { deaths <- p }})
	if err == nil || !strings.Contains(err.Error(), "quitter exited before it was ready") {
		t.Errorf("a process that exits early: %v", err)
	}
	_, err = Start(ctx, ProcSpec{Name: "missing", Bin: "/nonexistent/bin"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/bin") {
		t.Errorf("a missing binary: %v", err)
	}
	select {
	case d := <-deaths:
		t.Errorf("a process that never got ready (%s) was reported as a death as well as Start's error", d.Name)
	default:
	}
}

// TestProcDeathAndNotices: a ready process that exits on its own is a
// death, told at once; the notices it prints meanwhile reach OnNotice.
func TestProcDeathAndNotices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exit := notice.Notice{Prog: "hla", Kind: notice.Exited, Process: &trace.Process{Name: "w3wp.exe", PID: 7, Exit: &trace.Exit{Code: -1, Signal: "SIGKILL", Death: true}}}
	deaths := make(chan *Proc, 1)
	var mu sync.Mutex
	var got []notice.Notice
	serving := notice.Notice{Prog: notice.ProgHLA, Kind: notice.Serving, Addr: "http://x:1"}
	script := fmt.Sprintf("echo '%s'; echo 'not a notice'; echo '%s'; read line; exit 4", serving, exit)
	p, err := Start(ctx, ProcSpec{Name: "dier", Bin: "/bin/sh", Args: []string{"-c", script}, Ready: notice.HLAServing,
		OnDeath:  func(p *Proc) { deaths <- p },
		OnNotice: func(n notice.Notice) { mu.Lock(); got = append(got, n); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	// The script waits on its stdin (the test's, closed: read fails at once).
	select {
	case d := <-deaths:
		if d != p || d.Cmd.ProcessState.ExitCode() != 4 {
			t.Errorf("death of %s, exit %d", d.Name, d.Cmd.ProcessState.ExitCode())
		}
	case <-ctx.Done():
		t.Fatal("no death reported for a process that exited on its own")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Kind != notice.Exited || got[0].Process.PID != 7 {
		t.Errorf("notices %+v, want the one exit notice", got)
	}
}

// The run says the lab shortens the vendor's 30 s poll only when it does,
// and names the model's LLAWP.
func TestPollWaitLine(t *testing.T) {
	tests := []struct {
		poll        time.Duration
		model, want string
		shortens    bool
	}{
		{5 * time.Second, "iis", "waiting for 2 management polls by LLAWP.exe (every 5s", true},
		{29 * time.Second, "apache", "waiting for 2 management polls by LLAWP (every 29s", true},
		{30 * time.Second, "iis", "waiting for 2 management polls by LLAWP.exe (every 30s)", false},
		{time.Minute, "apache", "waiting for 2 management polls by LLAWP (every 1m0s)", false},
	}
	for _, tt := range tests {
		l, err := Seed()
		if err != nil {
			t.Fatal(err)
		}
		l.WebServer.Model = tt.model
		r := &Run{Lab: l, Opts: Options{Poll: tt.poll}}
		got := r.pollWaitLine(2)
		if !strings.HasPrefix(got, tt.want) || strings.Contains(got, "shortens") != tt.shortens {
			t.Errorf("--poll %v, %s: %q; want it to start %q, saying the lab shortens the vendor's poll: %v", tt.poll, tt.model, got, tt.want, tt.shortens)
		}
	}
}

// Polls are counted from the LLAWP's trace whatever its file is called
// (LLAWP.exe-PID or LLAWP-PID): by the phase of its events.
func TestPollsSoFarByPhase(t *testing.T) {
	dir := t.TempDir()
	write := func(proc, role, phase string, polls int) {
		rec, err := trace.Create(dir, trace.Options{Proc: proc, PID: 100 + polls, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		rec.Emit(trace.Event{Op: trace.OpConnect})
		for range polls {
			rec.Emit(trace.Event{Op: trace.OpResponse, Phase: phase, Note: "DoManagement GET_AGENT_COMMANDS: SUCCESS (0 commands)", Request: trace.ReqDoManagement, Subject: "GET_AGENT_COMMANDS", Result: "SUCCESS", Body: "0 commands"})
		}
		rec.Close()
	}
	write("LLAWP", "llawp", trace.PhaseManagement, 2)
	write("httpd", "hla", trace.PhaseRequests, 3)                         // not polls: not counted
	os.WriteFile(filepath.Join(dir, "LLAWP-999.trace.jsonl"), nil, 0o644) // just created, nothing in it yet
	r := &Run{Opts: Options{Out: dir}}
	if n, err := r.pollsSoFar(); n != 2 || err != nil {
		t.Errorf("pollsSoFar = %d, %v; want 2", n, err)
	}
}
