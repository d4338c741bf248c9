package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/trace"
)

// TestFaultRunnerOnOneHost: a kill and a restart of one of two servers on
// one host act on that one; the other one goes on and takes its own faults.
func TestFaultRunnerOnOneHost(t *testing.T) {
	r := newFaultRun(t, twoOnOneHost+`  - {server: "smps1.shared.lab:44444", action: kill}
  - {at: 50ms, server: "smps1.shared.lab:44443", action: stall 1s}
  - {at: 100ms, server: "smps1.shared.lab:44444", action: restart}
  - {at: 150ms, server: "smps1.shared.lab:44444", action: reset}
`, "")
	port43, port44 := r.procs[0], r.procs[1]
	if err := r.run(t, nil); err != nil {
		t.Fatal(err)
	}
	recs := r.summary.Faults
	if recs[0].PID != port44.PID() || recs[0].Server != "smps1.shared.lab:44444" || recs[0].Address != "127.0.0.21:44444" {
		t.Errorf("kill record %+v: want pid %d (the :44444 server) at 127.0.0.21:44444", recs[0], port44.PID())
	}
	if recs[1].PID != port43.PID() || recs[1].Address != "127.0.0.21:44443" || !recs[1].Applied {
		t.Errorf("stall record %+v: want pid %d (the :44443 server)", recs[1], port43.PID())
	}
	if recs[2].PID != 0 || recs[2].NewPID == 0 || recs[2].Address != "127.0.0.21:44444" {
		t.Errorf("restart record %+v: want a new pid and no old one (the server was down)", recs[2])
	}
	if recs[3].PID != recs[2].NewPID {
		t.Errorf("reset record %+v: want the restarted pid %d", recs[3], recs[2].NewPID)
	}
	select {
	case <-port43.Done():
		t.Error("the :44443 server was stopped by faults on the :44444 one")
	default:
	}
	if len(r.infos) != 1 || r.infos[0].PID != port44.PID() {
		t.Errorf("ended processes %+v: want only the :44444 server, pid %d", r.infos, port44.PID())
	}
}

// faultRun is a run of a lab's faults against stand-in servers, started
// as startPolicyServers starts them, its control requests to fc.
type faultRun struct {
	*Run
	fc   *fakeControl
	said strings.Builder // its progress lines
}

// newFaultRun parses labText and starts its servers; onTerm is what they
// do on SIGTERM (see fakeSmps).
func newFaultRun(t *testing.T, labText, onTerm string) *faultRun {
	t.Helper()
	l, err := Parse("lab.yaml", "", []byte(labText))
	if err != nil {
		t.Fatal(err)
	}
	fr := &faultRun{fc: newFakeControl(t)}
	fr.Run = &Run{Lab: l, Opts: Options{Out: t.TempDir(), BinDir: fakeSmps(t, strings.TrimPrefix(fr.fc.srv.URL, "http://"), onTerm),
		StartTimeout: 5 * time.Second, Progress: &syncWriter{w: &fr.said}}}
	startFakeServers(t, fr.Run)
	return fr
}

// run applies the faults as Execute does, from before the workload to
// stopFaults, whose error it returns; before runs once they started.
func (fr *faultRun) run(t *testing.T, before func(context.Context)) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := fr.startFaults(ctx); err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(ctx)
	}
	fr.faultsWorkloadStarted()
	if err := fr.awaitFaults(ctx); err != nil {
		t.Fatal(err)
	}
	return fr.stopFaults()
}

// fakeControl is an smps control API that records what it was told.
type fakeControl struct {
	mu  sync.Mutex
	got []string
	srv *httptest.Server
	// seen has a value after each request recorded: what waitRequests
	// waits on.
	seen chan struct{}
}

func newFakeControl(t *testing.T) *fakeControl {
	fc := &fakeControl{seen: make(chan struct{}, 64)}
	fc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As smps does: a POST without the header is not from the lab.
		if r.Header.Get(fault.ControlHeader) != "1" {
			http.Error(w, "smps control: a POST needs the header X-Agentlab-Control: 1", http.StatusForbidden)
			return
		}
		fc.mu.Lock()
		fc.got = append(fc.got, r.Method+" "+r.URL.RequestURI())
		fc.mu.Unlock()
		select {
		case fc.seen <- struct{}{}:
		default: // a signal is pending already
		}
		if strings.Contains(r.URL.Path, "refuse-me") {
			http.Error(w, "smps control: no", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"done": "did " + r.URL.Path})
	}))
	t.Cleanup(fc.srv.Close)
	return fc
}

func (fc *fakeControl) requests() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return slices.Clone(fc.got)
}

// waitRequests waits until the control API was told n things.
func (fc *fakeControl) waitRequests(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	for len(fc.requests()) < n {
		select {
		case <-fc.seen:
		case <-ctx.Done():
			t.Fatalf("%d control requests, want %d: %q", len(fc.requests()), n, fc.requests())
		}
	}
}

// fakeSmps writes an smps stand-in that prints what smps prints when it
// is ready, control address first, and waits to be stopped.
// onTerm is what it does on SIGTERM; "" lets the signal end it.
func fakeSmps(t *testing.T, control, onTerm string) string {
	dir := t.TempDir()
	ready := []string{
		notice.Notice{Prog: notice.ProgSmps, Kind: notice.Control, Addr: control}.String(),
		notice.Notice{Prog: notice.ProgSmps, Kind: notice.Listening, Addr: "127.0.0.1:1"}.String(),
	}
	script := "#!/bin/sh\n"
	if onTerm != "" {
		// Set before it says it is ready: the lab may stop it at once.
		script += fmt.Sprintf("trap 'kill $! 2>/dev/null; %s' TERM\n", onTerm)
	}
	script += fmt.Sprintf("printf '%%s\\n' '%s' '%s'\n", ready[0], ready[1])
	if onTerm == "" {
		script += "exec sleep 60\n"
	} else {
		// The sleep lets go of stdout, which the lab reads to its end.
		script += "sleep 60 >/dev/null 2>&1 &\nwait\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "smps"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startFakeServers starts the lab's servers as startPolicyServers does,
// through faultServerArgs, with the stand-in binary.
func startFakeServers(t *testing.T, r *Run) {
	t.Helper()
	for _, ps := range r.Lab.PolicyServers {
		args := r.faultServerArgs(ps, []string{"--name", ps.Host})
		if !slices.Contains(args, "--control") || !slices.Contains(args, r.Lab.Hosts[ps.Host]+":0") {
			t.Fatalf("args %q: want --control on the server's own address", args)
		}
		p, err := Start(context.Background(), ProcSpec{Name: ps.Host, Bin: r.bin("smps"), Args: args, Ready: notice.SmpsListening})
		if err != nil {
			t.Fatal(err)
		}
		r.procs = append(r.procs, p)
		r.faultServerStarted(ps, p)
	}
	t.Cleanup(r.stopAll)
}

// writeTrace appends events to a per-process trace in the run's folder;
// torn leaves the last line without its newline, as a write in progress.
func writeTrace(t *testing.T, path string, torn bool, evs ...trace.Event) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, e := range evs {
		b, _ := json.Marshal(e)
		if !torn || i < len(evs)-1 {
			b = append(b, '\n')
		} else {
			b = b[:len(b)/2]
		}
		f.Write(b)
	}
}

// TestFaultRunner runs the faults of a lab against stand-in servers: each
// is applied, phase anchors come from the agents' traces, a kill and a
// restart replace the process, smps is told the others through its
// control API, and the records say what happened.
func TestFaultRunner(t *testing.T) {
	r := newFaultRun(t, faultLab+"faults:\n"+sixFaults, "")
	oldSmps1 := r.procs[0]
	hcoAt := time.Now().Add(-time.Second).Round(time.Millisecond)
	err := r.run(t, func(ctx context.Context) {
		// The agent reached hco before the workload: the phase faults fall
		// due before it starts. (When exactly, and what a trace of another
		// role or a torn line does, TestSchedule shows in virtual time.)
		writeTrace(t, filepath.Join(r.Opts.Out, "w3wp.exe-2.trace.jsonl"), false,
			trace.Event{T: hcoAt.Add(-time.Second), Role: "hla", Phase: trace.PhaseBootstrap, Op: trace.OpConnect},
			trace.Event{T: hcoAt, Role: "hla", Phase: trace.PhaseHCO, Op: trace.OpConnect})
		r.fc.waitRequests(ctx, t, 2)
	})
	if err != nil {
		t.Fatalf("stopFaults: %v\nprogress:\n%s", err, r.said.String())
	}

	wantReq := []string{
		"POST /faults/reset", "POST /faults/stop-accepting?mode=queue",
		"POST /faults/stall?for=2s", "POST /faults/reject-handshakes?code=3153",
	}
	if got := r.fc.requests(); !slices.Equal(got, wantReq) {
		t.Errorf("control requests %q, want %q", got, wantReq)
	}
	recs := r.summary.Faults
	if len(recs) != 6 {
		t.Fatalf("%d records", len(recs))
	}
	for i, rec := range recs {
		if !rec.Applied || rec.Error != "" || rec.Line != faultLabLines+1+i || rec.OffsetMs == nil {
			t.Errorf("record %d: %+v", i, rec)
		}
	}
	// The phase faults came before the workload: their offsets are negative.
	if recs[0].Time.Before(hcoAt) || *recs[0].OffsetMs > 0 || *recs[5].OffsetMs > 0 {
		t.Errorf("the after: hco fault: %+v", recs[0])
	}
	if !strings.HasPrefix(recs[2].Result, fmt.Sprintf("pid %d killed", oldSmps1.PID())) || recs[2].Address != "127.0.0.21:44443" {
		t.Errorf("kill record %+v", recs[2])
	}
	if recs[3].NewPID == 0 || recs[3].NewPID == oldSmps1.PID() || recs[3].PID != 0 {
		t.Errorf("restart record %+v: want a new pid and no old one (the server was down)", recs[3])
	}
	// The run now owns the new smps1 and remembers the killed one.
	var names []string
	for _, p := range r.procs {
		names = append(names, fmt.Sprintf("%s/%d", p.Name, p.PID()))
		if p == oldSmps1 {
			t.Error("the killed process is still among the run's processes")
		}
	}
	if !slices.Contains(names, fmt.Sprintf("smps1.shared.lab/%d", recs[3].NewPID)) {
		t.Errorf("the run's processes %q lack the restarted smps1", names)
	}
	if len(r.infos) != 1 || r.infos[0].PID != oldSmps1.PID() || !strings.Contains(r.infos[0].Fault, "killed (SIGKILL) by the fault at lab.yaml:") {
		t.Errorf("infos %+v", r.infos)
	}
	for _, want := range []string{"6 faults to apply", "fault at 300ms (lab.yaml:", "kill smps1.shared.lab: pid", "restart smps1.shared.lab: started again"} {
		if !strings.Contains(r.said.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, r.said.String())
		}
	}
}

// TestFaultRestartRunning: a restart stops a running server with SIGTERM
// first; only an end other than the one asked for gets a line of its own.
func TestFaultRestartRunning(t *testing.T) {
	cases := []struct {
		name   string
		onTerm string // the stand-in's answer to SIGTERM; "": the signal ends it
		told   string // the progress line about the stop; "": none
	}{
		{"ended by the signal", "", ""},
		{"exits 0", "exit 0", ""},
		{"exits 3", "exit 3", "for its restart: smps1.shared.lab (pid %d): exit status 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newFaultRun(t, faultLab+"faults:\n  - {server: smps1, action: restart}\n", c.onTerm)
			old := r.procs[0]
			if err := r.run(t, nil); err != nil {
				t.Fatal(err)
			}
			rec := r.summary.Faults[0]
			if want := fmt.Sprintf("pid %d stopped (SIGTERM) and started again: pid %d listens on 127.0.0.21:44443", old.PID(), rec.NewPID); rec.Result != want {
				t.Errorf("result %q, want %q", rec.Result, want)
			}
			line := "stopping smps1.shared.lab"
			progress := r.said.String()
			if got := strings.Contains(progress, line); got != (c.told != "") {
				t.Errorf("progress says %q: %v, want %v:\n%s", line, got, c.told != "", progress)
			}
			if c.told != "" && !strings.Contains(progress, fmt.Sprintf(c.told, old.PID())) {
				t.Errorf("progress lacks %q:\n%s", fmt.Sprintf(c.told, old.PID()), progress)
			}
		})
	}
}

// TestFaultRunnerFailures: a fault that cannot be applied is recorded with
// why, the others still are, and the run's error names each by file:line.
func TestFaultRunnerFailures(t *testing.T) {
	r := newFaultRun(t, faultLab+`faults:
  - {server: smps1, action: kill}
  - {at: 50ms, server: smps1, action: stall 1s}
  - {at: 50ms, server: smps2, action: reset}
  - {after: management, server: smps2, action: resume}
`, "")
	err := r.run(t, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		fmt.Sprintf("lab.yaml:%d: fault at 50ms stall 1s on smps1.shared.lab: smps1.shared.lab is not running", faultLabLines+2),
		fmt.Sprintf("lab.yaml:%d: fault after management resume on smps2.shared.lab: not applied: the web server's agents never reached phase management", faultLabLines+4),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	recs := r.summary.Faults
	if !recs[0].Applied || recs[1].Applied || !recs[2].Applied || recs[3].Applied {
		t.Errorf("applied: %v %v %v %v", recs[0].Applied, recs[1].Applied, recs[2].Applied, recs[3].Applied)
	}
	if got := r.fc.requests(); !slices.Equal(got, []string{"POST /faults/reset"}) {
		t.Errorf("control requests %q", got)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
