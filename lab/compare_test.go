package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// evb builds a trace by hand, one event per call, each a millisecond after
// the last, so that a test reads as the trace would.
type evb struct {
	t0  time.Time
	evs []trace.Event
}

func (b *evb) add(proc string, pid int, role, op, conn, server, phase, note string, says ...func(*trace.Event)) *evb {
	e := trace.Event{
		T: b.t0.Add(time.Duration(len(b.evs)) * time.Millisecond), Proc: proc, PID: pid, Role: role, Op: op,
		Conn: conn, LocalHost: "wa1.shared.lab", RemoteHost: server, Phase: phase, Note: note,
	}
	for _, f := range says {
		f(&e)
	}
	b.evs = append(b.evs, e)
	return b
}

// The typed fields the producers fill beside the note: a handshake's
// message, a request's call, a response's result.
func hs(msg string) func(*trace.Event)   { return func(e *trace.Event) { e.Handshake = msg } }
func call(req string) func(*trace.Event) { return func(e *trace.Event) { e.Request = req } }
func result(req, res string) func(*trace.Event) {
	return func(e *trace.Event) { e.Request, e.Result = req, res }
}

func newEvb() *evb { return &evb{t0: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

const (
	ps1 = "smps1.shared.lab"
	ps2 = "smps2.shared.lab"
)

// startup adds what one agent process does at start: a bootstrap
// connection to smps2 that the agent resets after GetHostConfig, then two
// HCO connections to smps1, the first fetching the ACO.
func (b *evb) startup(proc string, pid int, role string) *evb {
	c := func(n int) string { return fmt.Sprintf("%d-%d", pid, n) }
	b.add(proc, pid, role, trace.OpConnect, c(1), ps2, trace.PhaseBootstrap, "")
	b.add(proc, pid, role, trace.OpHandshake, c(1), ps2, trace.PhaseBootstrap, "ClientHello trusted host trust_wa1", hs(trace.HandshakeClientHello))
	b.add(proc, pid, role, trace.OpHandshake, c(1), ps2, trace.PhaseBootstrap, "ServerHello from smps2.shared.lab", hs(trace.HandshakeServerHello))
	b.add(proc, pid, role, trace.OpHandshake, c(1), ps2, trace.PhaseBootstrap, "ClientConfirm", hs(trace.HandshakeClientConfirm))
	b.add(proc, pid, role, trace.OpRequest, c(1), ps2, trace.PhaseBootstrap, "GetHostConfig hco.smps1", call(trace.ReqGetHostConfig))
	b.add(proc, pid, role, trace.OpResponse, c(1), ps2, trace.PhaseBootstrap, "GetHostConfig hco.smps1: SUCCESS", result(trace.ReqGetHostConfig, "SUCCESS"))
	b.add(proc, pid, role, trace.OpReset, c(1), ps2, trace.PhaseBootstrap, "")
	for n := 2; n <= 3; n++ {
		b.add(proc, pid, role, trace.OpConnect, c(n), ps1, trace.PhaseHCO, "")
		b.add(proc, pid, role, trace.OpHandshake, c(n), ps1, trace.PhaseHCO, "ClientConfirm", hs(trace.HandshakeClientConfirm))
	}
	b.add(proc, pid, role, trace.OpRequest, c(2), ps1, trace.PhaseHCO, "GetAgentConfig aco.wa1", call(trace.ReqGetAgentConfig))
	return b
}

func summaryOf(model, mpm string, workers, maxReq int) Summary {
	var s Summary
	s.Settings = Settings{Model: model, MPM: mpm, Workers: workers, MaxRequests: maxReq}
	s.Requests.Sent, s.Requests.Succeeded = 200, 200
	s.Requests.ElapsedMs, s.Requests.P50ms, s.Requests.P99ms = 500, 1.5, 20
	s.AgentMemory = &MemorySample{KiB: 3 * 1024, PIDs: []int{10, 11}}
	return s
}

func TestComputeFigures(t *testing.T) {
	iis := newEvb().startup("w3wp.exe", 100, "hla").startup("LLAWP.exe", 101, "llawp")
	// Events that are not the agent's: the Policy Servers' own and
	// smreghost's must not count.
	iis.add("smps", 5, "policyserver", trace.OpAccept, "5-1", "wa1.shared.lab", "", "")
	iis.add("smps", 5, "policyserver", trace.OpHandshake, "5-1", "wa1.shared.lab", "", "ClientConfirm", hs(trace.HandshakeClientConfirm))
	iis.add("smreghost", 6, "smreghost", trace.OpConnect, "6-1", ps2, trace.PhaseAdmin, "")
	iis.add("smreghost", 6, "smreghost", trace.OpHandshake, "6-1", ps2, trace.PhaseAdmin, "ClientConfirm", hs(trace.HandshakeClientConfirm))
	iis.add("LLAWP.exe", 101, "llawp", trace.OpRequest, "101-2", ps1, trace.PhaseManagement, "DoManagement GET_AGENT_COMMANDS", call(trace.ReqDoManagement))
	iis.add("LLAWP.exe", 101, "llawp", trace.OpResponse, "101-2", ps1, trace.PhaseManagement, "DoManagement GET_AGENT_COMMANDS: SUCCESS", result(trace.ReqDoManagement, "SUCCESS"))
	iis.add("LLAWP.exe", 101, "llawp", trace.OpRequest, "101-2", ps1, trace.PhaseManagement, "DoManagement GET_AGENT_COMMANDS", call(trace.ReqDoManagement))

	apache := newEvb()
	apache.add("httpd", 200, "httpd-parent", trace.OpConnect, "200-1", ps1, "", "") // not an agent process
	apache.startup("LLAWP.exe", 201, "llawp")
	for pid := 202; pid <= 204; pid++ {
		apache.startup("httpd", pid, "hla")
	}

	// peak: two sockets open at once to smps1, then one closes (a
	// disconnect followed by a reset of the same socket counts once) and
	// a third opens: the peak stays 2. A failed connect opens nothing.
	peak := newEvb()
	peak.add("w3wp.exe", 1, "hla", trace.OpConnect, "1-1", ps1, trace.PhaseHCO, "")
	peak.add("w3wp.exe", 1, "hla", trace.OpConnect, "1-2", ps1, trace.PhaseHCO, "")
	peak.add("w3wp.exe", 1, "hla", trace.OpDisconnect, "1-1", ps1, trace.PhaseRequests, "")
	peak.add("w3wp.exe", 1, "hla", trace.OpReset, "1-1", ps1, trace.PhaseRequests, "")
	peak.add("w3wp.exe", 1, "hla", trace.OpConnect, "1-3", ps1, trace.PhaseRequests, "")
	peak.add("w3wp.exe", 1, "hla", trace.OpConnect, "", ps2, trace.PhaseRequests, "failed: connection refused", func(e *trace.Event) { e.Error = "connection refused" })
	peak.add("w3wp.exe", 1, "hla", trace.OpConnect, "1-4", ps2, trace.PhaseRequests, "")
	peak.add("w3wp.exe", 1, "hla", trace.OpReset, "1-4", ps2, trace.PhaseRequests, "")
	peak.add("w3wp.exe", 1, "hla", trace.OpConnect, "1-5", ps2, trace.PhaseRequests, "")
	// Out of order, as a concatenated trace may be: 1-1's close comes in
	// the slice after 1-3's connect, though its time is earlier, so three
	// never were open at once.
	shuffled := append([]trace.Event(nil), peak.evs...)
	shuffled[2], shuffled[4] = shuffled[4], shuffled[2]

	// Recycling: three children, one replaced after its requests, so four
	// children and the LLAWP bootstrap; 5 processes x 3 connections over
	// 200 page loads.
	recycle := newEvb().startup("LLAWP.exe", 301, "llawp")
	for pid := 302; pid <= 305; pid++ {
		recycle.startup("httpd", pid, "hla")
	}

	per1000 := func(v float64) *float64 { return &v }
	tests := []struct {
		name string
		evs  []trace.Event
		sum  Summary
		want Figures
	}{
		{"iis", iis.evs, func() Summary {
			s := summaryOf("iis", "", 0, 0)
			s.ManagementPolls = 1
			return s
		}(), Figures{
			Run: "IIS", Model: "iis", Processes: 2, BootstrapRounds: 2, Handshakes: 6,
			Connections: map[string]int{ps1: 4, ps2: 2}, PeakOpen: map[string]int{ps1: 4, ps2: 1},
			ACODownloads: 2, ManagementPolls: 1, // summary.json's: the run counts them

		}},
		{"apache prefork, default mpm", apache.evs, summaryOf("apache", "", 3, 0), Figures{
			Run: "Apache prefork", Model: "apache", MPM: "prefork", Workers: 3, Processes: 4, BootstrapRounds: 4, Handshakes: 12,
			Connections: map[string]int{ps1: 8, ps2: 4}, PeakOpen: map[string]int{ps1: 8, ps2: 1},
			ACODownloads: 4,
		}},
		{"peak open sockets", peak.evs, summaryOf("iis", "", 0, 0), Figures{
			Run: "IIS", Model: "iis", Processes: 1,
			Connections: map[string]int{ps1: 3, ps2: 2}, FailedConnects: 1, PeakOpen: map[string]int{ps1: 2, ps2: 1},
		}},
		{"peak open sockets, unordered trace", shuffled, summaryOf("iis", "", 0, 0), Figures{
			Run: "IIS", Model: "iis", Processes: 1,
			Connections: map[string]int{ps1: 3, ps2: 2}, FailedConnects: 1, PeakOpen: map[string]int{ps1: 2, ps2: 1},
		}},
		{"recycling", recycle.evs, summaryOf("apache", "worker", 3, 20), Figures{
			Run: "Apache worker", Model: "apache", MPM: "worker", Workers: 3, MaxRequestsPerChild: 20, Recycling: true,
			Processes: 5, BootstrapRounds: 5, Handshakes: 15,
			Connections: map[string]int{ps1: 10, ps2: 5}, PeakOpen: map[string]int{ps1: 10, ps2: 1},
			ACODownloads: 5, ConnsPer1000: per1000(75),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.want
			w.PageLoads, w.Succeeded, w.ElapsedMs, w.RequestsPerSec, w.P50ms, w.P99ms = 200, 200, 500, 400, 1.5, 20
			w.RSSMiB, w.RSSProcs = 3, 2
			got := ComputeFigures(tc.evs, tc.sum)
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(w)
			if !bytes.Equal(gj, wj) {
				t.Errorf("figures\n got %s\nwant %s", gj, wj)
			}
		})
	}
}

func TestComputeFiguresNoTrace(t *testing.T) {
	// A run that failed before its web server started has no agent events
	// and no memory sample: zeros, not a panic or a division by zero.
	f := ComputeFigures(nil, Summary{Settings: Settings{Model: "apache", MaxRequests: 5}})
	if f.Processes != 0 || f.RequestsPerSec != 0 || f.RSSProcs != 0 || f.ConnsPer1000 != nil {
		t.Errorf("%+v", f)
	}
}

func TestWriteCompareTable(t *testing.T) {
	b := newEvb().startup("w3wp.exe", 100, "hla").startup("LLAWP.exe", 101, "llawp")
	f := ComputeFigures(b.evs, summaryOf("iis", "", 0, 0))
	runs := []CompareRun{{Figures: f}, {Figures: f, Error: "boom"}}
	runs[1].Run = "Apache worker"
	var out bytes.Buffer
	if err := WriteCompareTable(&out, runs, []string{ps1, ps2}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"Apache worker (FAILED)", "TCP connections opened to smps1.shared.lab", "peak open sockets to smps2.shared.lab",
		"3.0 (2 procs)"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "per 1,000") {
		t.Errorf("connections per 1,000 requests shown without recycling:\n%s", s)
	}
	runs[0].SetConnsPer1000()
	out.Reset()
	WriteCompareTable(&out, runs, []string{ps1, ps2})
	if !strings.Contains(out.String(), "connections opened per 1,000 page loads") {
		t.Errorf("no connections per 1,000 page loads row:\n%s", out.String())
	}
	if err := CompareFailures(runs); err == nil || !strings.Contains(err.Error(), "Apache worker run failed") {
		t.Errorf("CompareFailures: %v", err)
	}
}

func TestSampleMemory(t *testing.T) {
	m, err := SampleMemory(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if m.KiB <= 0 || !slices.Contains(m.PIDs, os.Getpid()) {
		t.Errorf("%+v", m)
	}
}

// TestPollsAgree: the LLAWP goes on polling while the lab stops the
// processes (an Apache child that takes seconds to drain keeps it alive),
// so a count taken when the wait ended and one taken from the final trace
// disagreed: agentlab compare showed 6 polls where summary.json said 2.
// The run counts once, from the merged trace, and compare shows that.
func TestPollsAgree(t *testing.T) {
	l, err := Seed()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	r := &Run{Lab: l, Opts: Options{Out: out, Poll: time.Second}}
	b := newEvb().startup("LLAWP.exe", 101, "llawp")
	poll := func() {
		b.add("LLAWP.exe", 101, "llawp", trace.OpRequest, "101-2", ps1, trace.PhaseManagement, "DoManagement GET_AGENT_COMMANDS", call(trace.ReqDoManagement))
		b.add("LLAWP.exe", 101, "llawp", trace.OpResponse, "101-2", ps1, trace.PhaseManagement, "DoManagement GET_AGENT_COMMANDS: SUCCESS (0 commands)", result(trace.ReqDoManagement, "SUCCESS"))
	}
	write := func() {
		t.Helper()
		var buf bytes.Buffer
		if err := trace.WriteEvents(&buf, b.evs); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, trace.FileName("LLAWP.exe", 101)), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	poll()
	poll()
	write()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.waitPolls(ctx); err != nil {
		t.Fatal(err)
	}
	// The slow stop: four more polls, and a request the stop cut short.
	for range 4 {
		poll()
	}
	b.add("LLAWP.exe", 101, "llawp", trace.OpRequest, "101-2", ps1, trace.PhaseManagement, "DoManagement GET_AGENT_COMMANDS", call(trace.ReqDoManagement))
	b.add("LLAWP.exe", 101, "llawp", trace.OpDisconnect, "101-2", ps1, trace.PhaseManagement, "")
	write()
	evs, err := r.finish(nil)
	if len(evs) != len(b.evs) {
		t.Fatalf("merged %d events, want %d (%v)", len(evs), len(b.evs), err)
	}
	var saved Summary
	data, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if err := json.Unmarshal(data, &saved); err != nil {
		t.Fatal(err)
	}
	fig := ComputeFigures(evs, r.Summary())
	if saved.ManagementPolls != 6 || fig.ManagementPolls != 6 {
		t.Errorf("summary.json says %d polls, agentlab compare %d: want both 6, the answered polls in the trace",
			saved.ManagementPolls, fig.ManagementPolls)
	}
}
