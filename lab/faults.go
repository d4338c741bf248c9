package lab

// Faults a lab applies to its Policy Servers while the workload runs
// (docs/faults.md): killing and restarting a server's process, which the
// lab does itself, and the faults a running smps carries out when told to
// through its control API (smps --control): stop accepting, reset every
// connection, stall its replies, reject handshakes, resume.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/agentlab/agentlab/yamlfile"

	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/trace"
)

// Fault actions, as lab files write them. The ones smps carries out keep
// the names of its control API.
const (
	ActionKill             = "kill"
	ActionRestart          = "restart"
	ActionStopAccepting    = "stop-accepting"
	ActionReset            = "reset"
	ActionStall            = "stall"
	ActionRejectHandshakes = "reject-handshakes"
	ActionResume           = "resume"
)

var actionList = "kill, restart, stop-accepting [refuse|queue], reset, stall DURATION, reject-handshakes [CODE] or resume"

// The handshake error codes reject-handshakes may name: tli's
// CodeNoClientHello (3152) to CodeBadEncryption (3157). lab may not import
// tli (DESIGN.md); smps checks the range again when told.
const (
	minRejectCode = 3152
	maxRejectCode = 3157
)

// maxStall is smps's limit on a stall (policyserver.MaxStall): a lab file
// asking for more fails at once, with its line, not when the fault is due.
const maxStall = 24 * time.Hour

// controlHeader is what smps requires on a POST to its control API
// (policyserver.ControlHeader), so that a web page cannot send one.
const controlHeader = "X-Agentlab-Control"

// AnchorWorkload is the default anchor of a fault's at: the moment the
// workload starts.
const AnchorWorkload = "workload"

// faultPhases are the trace phases a fault may wait for with after:.
// Admin is not one: the web server's agents never enter it.
var faultPhases = []string{trace.PhaseBootstrap, trace.PhaseHCO, trace.PhaseRequests, trace.PhaseManagement}

// FaultAction is what a fault does: a verb and its argument.
type FaultAction struct {
	Kind  string
	Queue bool          // stop-accepting queue
	For   time.Duration // stall
	Code  int           // reject-handshakes; 0: smps's default
}

// ParseFaultAction reads "kill", "stall 10s", "stop-accepting queue",
// "reject-handshakes 3153" and the like.
func ParseFaultAction(s string) (FaultAction, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return FaultAction{}, fmt.Errorf("no action: want %s", actionList)
	}
	a := FaultAction{Kind: f[0]}
	args := f[1:]
	tooMany := func(max int) error {
		if len(args) > max {
			return fmt.Errorf("%s: unexpected %q", a.Kind, strings.Join(args[max:], " "))
		}
		return nil
	}
	switch a.Kind {
	case ActionKill, ActionRestart, ActionReset, ActionResume:
		return a, tooMany(0)
	case ActionStopAccepting:
		if len(args) > 0 {
			switch args[0] {
			case "refuse":
			case "queue":
				a.Queue = true
			default:
				return FaultAction{}, fmt.Errorf("stop-accepting %q: want refuse (connects refused, the default) or queue (connects wait in the backlog)", args[0])
			}
		}
		return a, tooMany(1)
	case ActionStall:
		if len(args) == 0 {
			return FaultAction{}, errors.New("stall needs a duration, such as stall 10s")
		}
		d, err := time.ParseDuration(args[0])
		if err != nil || d <= 0 {
			return FaultAction{}, fmt.Errorf("stall %q: want a positive duration such as 10s", args[0])
		}
		if d > maxStall {
			return FaultAction{}, fmt.Errorf("stall %q: at most %s", args[0], maxStall)
		}
		a.For = d
		return a, tooMany(1)
	case ActionRejectHandshakes:
		if len(args) > 0 {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < minRejectCode || n > maxRejectCode {
				return FaultAction{}, fmt.Errorf("reject-handshakes %q: want one of the vendor's handshake error codes %d to %d",
					args[0], minRejectCode, maxRejectCode)
			}
			a.Code = n
		}
		return a, tooMany(1)
	}
	return FaultAction{}, fmt.Errorf("unknown action %q: want %s", a.Kind, actionList)
}

// String is the action as a lab file writes it; ParseFaultAction reads it back.
func (a FaultAction) String() string {
	switch a.Kind {
	case ActionStopAccepting:
		if a.Queue {
			return a.Kind + " queue"
		}
	case ActionStall:
		return a.Kind + " " + a.For.String()
	case ActionRejectHandshakes:
		if a.Code != 0 {
			return a.Kind + " " + strconv.Itoa(a.Code)
		}
	}
	return a.Kind
}

// controlPath is the smps control API request for the actions smps
// carries out itself.
func (a FaultAction) controlPath() string {
	q := url.Values{}
	switch a.Kind {
	case ActionStopAccepting:
		if a.Queue {
			q.Set("mode", "queue")
		}
	case ActionStall:
		q.Set("for", a.For.String())
	case ActionRejectHandshakes:
		if a.Code != 0 {
			q.Set("code", strconv.Itoa(a.Code))
		}
	}
	p := "/faults/" + a.Kind
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// Fault is one item of a lab file's faults: list.
//
//   - at: 5s          # after the anchor (default 0s)
//     after: hco      # the anchor: workload (default), bootstrap, hco, requests or management
//     server: smps1   # a policy server of the lab: its host, host:port, or the host's first label
//     action: kill    # see ParseFaultAction
type Fault struct {
	Line  int           // of the item in the lab file
	At    time.Duration // after the anchor
	After string        // the anchor; "" means AnchorWorkload
	// Server is as written until Validate, then the server's host, or its
	// host:port when the host has several of the lab's servers.
	Server string
	Action FaultAction

	addr       string // the server's host:port, set by Validate: what the run keys it by
	actionText string
	problems   []lineError
}

type lineError struct {
	line int
	msg  string
}

// UnmarshalYAML reads a fault item and keeps every problem with its line,
// for Validate to report with the file's name: a lab file with three bad
// faults gets three errors, not the first one.
func (f *Fault) UnmarshalYAML(n ast.Node) error {
	line, _ := yamlfile.Pos(n)
	*f = Fault{Line: line}
	bad := func(n ast.Node, format string, a ...any) {
		line, _ := yamlfile.Pos(n)
		f.problems = append(f.problems, lineError{line, fmt.Sprintf(format, a...)})
	}
	entries := yamlfile.Entries(n)
	if entries == nil {
		bad(n, "a fault is a mapping of at, after, server and action, such as {at: 5s, server: smps1, action: kill}")
		return nil
	}
	// A key given twice is refused by the YAML parser before this runs.
	seen := map[string]bool{}
	for _, e := range entries {
		k := yamlfile.KeyText(e.Key)
		seen[k] = true
		v, ok := yamlfile.Scalar(e.Value)
		if !ok {
			bad(e.Value, "%s: want a single value, such as %s", k, map[string]string{
				"at": "5s", "after": "hco", "server": "smps1", "action": "stall 10s"}[k])
			continue
		}
		switch k {
		case "at":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				bad(e.Value, "at %q: want a duration such as 5s (0s: at once)", v)
			}
			f.At = d
		case "after":
			if v != AnchorWorkload && !slices.Contains(faultPhases, v) {
				bad(e.Value, "after %q: want %s (the workload's start) or a phase of the web server's agents: %s",
					v, AnchorWorkload, strings.Join(faultPhases, ", "))
			}
			f.After = v
		case "server":
			if v == "" {
				bad(e.Value, "server is empty: name one of the lab's policy servers")
			}
			f.Server = v
		case "action":
			f.actionText = v
			a, err := ParseFaultAction(v)
			if err != nil {
				bad(e.Value, "%v", err)
			}
			f.Action = a
		default:
			bad(e.Key, "unknown key %q in a fault: want at, after, server and action", k)
		}
	}
	if !seen["server"] {
		bad(n, "the fault names no server")
	}
	if !seen["action"] {
		bad(n, "the fault has no action: want %s", actionList)
	}
	return nil
}

// Anchor is the moment At counts from.
func (f Fault) Anchor() string {
	if f.After == "" {
		return AnchorWorkload
	}
	return f.After
}

// When is the fault's time as a person reads it: "at 5s", "1s after hco".
func (f Fault) When() string {
	if f.Anchor() == AnchorWorkload {
		return "at " + f.At.String()
	}
	if f.At == 0 {
		return "after " + f.After
	}
	return f.At.String() + " after " + f.After
}

// validateFaults gives one error per problem, each naming the lab file and
// the line, as file:line: message.
func (l *Lab) validateFaults() []error {
	var errs []error
	for i := range l.Faults {
		f := &l.Faults[i]
		for _, p := range f.problems {
			errs = append(errs, fmt.Errorf("%s:%d: fault %d: %s", l.File, p.line, i+1, p.msg))
		}
		if f.Server == "" {
			continue
		}
		ps, err := l.faultServer(f.Server)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: fault %d: %v", l.File, f.Line, i+1, err))
			continue
		}
		f.Server, f.addr = l.serverName(ps), ps.Addr()
	}
	return errs
}

// serverName is how the faults name a server to a person: its host, unless
// the host has several of the lab's servers, where the port tells them apart.
func (l *Lab) serverName(ps PolicyServer) string {
	for _, o := range l.PolicyServers {
		if o.Host == ps.Host && o.Port != ps.Port {
			return ps.Addr()
		}
	}
	return ps.Host
}

// faultServer finds the lab server a fault names: its host, host:port, or
// the host's first label (smps1 for smps1.shared.lab) when only one host
// has it.
func (l *Lab) faultServer(name string) (PolicyServer, error) {
	var exact, label []PolicyServer
	for _, p := range l.PolicyServers {
		switch {
		case p.Host == name || p.Addr() == name:
			exact = append(exact, p)
		case strings.SplitN(p.Host, ".", 2)[0] == name:
			label = append(label, p)
		}
	}
	hosts := l.ServerHosts()
	switch {
	case len(exact) == 1:
		return exact[0], nil
	case len(exact) > 1:
		return PolicyServer{}, fmt.Errorf("server %q is %d of the lab's policy servers: name one as host:port", name, len(exact))
	case len(label) == 1:
		return label[0], nil
	case len(label) > 1 && !slices.ContainsFunc(label, func(p PolicyServer) bool { return p.Host != label[0].Host }):
		return PolicyServer{}, fmt.Errorf("server %q is %d of the lab's policy servers: name one as host:port", name, len(label))
	case len(label) > 1:
		return PolicyServer{}, fmt.Errorf("server %q could be any of %d hosts: write the whole host name", name, len(label))
	}
	return PolicyServer{}, fmt.Errorf("server %q is not one of the lab's policy servers (%s)", name, strings.Join(hosts, ", "))
}

// FaultRecord is one fault of a run, for summary.json: what the lab file
// asked for and what the lab did.
type FaultRecord struct {
	Line    int       `json:"line"`
	When    string    `json:"when"`
	Server  string    `json:"server"`
	Action  string    `json:"action"`
	Applied bool      `json:"applied"`
	Time    time.Time `json:"time,omitzero"`
	// OffsetMs is Time after the workload's start (negative before it).
	OffsetMs *float64 `json:"offset_ms,omitempty"`
	PID      int      `json:"pid,omitempty"`     // the process the fault acted on
	NewPID   int      `json:"new_pid,omitempty"` // restart: the new process
	Address  string   `json:"address"`           // where the server listens
	Result   string   `json:"result,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// faultServerState is one Policy Server as the faults see it.
type faultServerState struct {
	ps      PolicyServer
	name    string // as the faults' records and messages name it
	addr    string // ip:port it listens on
	args    []string
	proc    *Proc // nil once killed
	control string
	ended   []*Proc // processes the faults killed or stopped
	started []*Proc // processes restarts started
	notes   map[*Proc]string
}

// faultRunner applies a run's faults from its own goroutine, one at a
// time in the order they fall due (file order for the same moment), so
// that a restart never races the kill before it.
type faultRunner struct {
	r      *Run
	faults []Fault

	servers map[string]*faultServerState // by PolicyServer.Addr: a host may have several
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}
	client  *http.Client
	files   []*os.File

	mu        sync.Mutex
	workStart time.Time
	phaseAt   map[string]time.Time
	records   []FaultRecord
	pending   int
	settled   chan struct{} // closed when no workload-anchored fault is left

	scan map[string]*traceTail
}

func (r *Run) hasFaults() bool { return len(r.Lab.Faults) > 0 }

// faultServerArgs is called with each Policy Server's arguments before it
// starts: with faults, the server gets a control API on its own lab
// address (any port), and the lab keeps the arguments for restarts.
func (r *Run) faultServerArgs(ps PolicyServer, args []string) []string {
	if !r.hasFaults() {
		return args
	}
	if r.faults == nil {
		r.faults = &faultRunner{r: r, faults: r.Lab.Faults, servers: map[string]*faultServerState{}}
	}
	args = append(slices.Clone(args), "--control", r.Lab.Hosts[ps.Host]+":0")
	r.faults.servers[ps.Addr()] = &faultServerState{ps: ps, name: r.Lab.serverName(ps), addr: fmt.Sprintf("%s:%d", r.Lab.Hosts[ps.Host], ps.Port), args: args}
	return args
}

// faultServerStarted gives the faults the process of a server that
// faultServerArgs prepared. The process's name is its host, which two
// servers may share, so the server says which it is.
func (r *Run) faultServerStarted(ps PolicyServer, p *Proc) {
	if r.faults == nil {
		return
	}
	if s := r.faults.servers[ps.Addr()]; s != nil {
		s.proc = p
	}
}

// controlAddr is what smps printed before it said it was ready.
func controlAddr(p *Proc) (string, error) {
	for _, line := range p.Stdout() {
		if n, ok := notice.ParseKind(line, notice.ProgSmps, notice.Control); ok {
			return n.Addr, nil
		}
	}
	return "", fmt.Errorf("%s (pid %d) did not say where its control API is", p.Name, p.PID())
}

// startFaults starts applying the faults once the Policy Servers run: a
// fault may wait for a phase the web server reaches while it starts.
func (r *Run) startFaults(ctx context.Context) error {
	fr := r.faults
	if fr == nil {
		return nil
	}
	for _, ps := range r.Lab.PolicyServers {
		s := fr.servers[ps.Addr()]
		if s == nil || s.proc == nil {
			return fmt.Errorf("policy server %s: no process for its faults", ps.Addr())
		}
		addr, err := controlAddr(s.proc)
		if err != nil {
			return err
		}
		s.control = addr
	}
	fr.ctx, fr.cancel = context.WithCancel(ctx)
	fr.done, fr.wake, fr.settled = make(chan struct{}), make(chan struct{}, 1), make(chan struct{})
	fr.client = &http.Client{Timeout: 5 * time.Second}
	fr.phaseAt, fr.scan = map[string]time.Time{}, map[string]*traceTail{}
	fr.records = make([]FaultRecord, len(fr.faults))
	for i, f := range fr.faults {
		fr.records[i] = FaultRecord{Line: f.Line, When: f.When(), Server: f.Server, Action: f.Action.String(), Address: fr.servers[f.addr].addr}
		if f.Anchor() == AnchorWorkload {
			fr.pending++
		}
	}
	if fr.pending == 0 {
		close(fr.settled)
	}
	// From here on the faults' goroutine writes progress lines too.
	if r.Opts.Progress != nil {
		r.Opts.Progress = &lockedWriter{w: r.Opts.Progress}
	}
	r.progress("%d faults to apply (%s); each is logged here as it is applied", len(fr.faults), r.Lab.File)
	go fr.run()
	return nil
}

// faultsWorkloadStarted anchors the faults that count from the workload.
func (r *Run) faultsWorkloadStarted() {
	fr := r.faults
	if fr == nil || fr.done == nil {
		return
	}
	fr.mu.Lock()
	fr.workStart = time.Now()
	fr.mu.Unlock()
	select {
	case fr.wake <- struct{}{}:
	default:
	}
}

// awaitFaults waits, after the workload, for the faults that count from
// its start and have not fallen due yet: a lab that restarts a server
// after its load ends still does so, and the run shows what followed.
func (r *Run) awaitFaults(ctx context.Context) error {
	fr := r.faults
	if fr == nil || fr.done == nil {
		return nil
	}
	select {
	case <-fr.settled:
		return nil
	default:
	}
	r.progress("the workload is over; waiting for the faults still to come")
	select {
	case <-fr.settled:
		return nil
	case <-fr.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopFaults stops applying faults, hands the processes the faults started
// to the run (which stops them with the others) and records the ones they
// ended. Its error names every fault that failed or never fell due.
func (r *Run) stopFaults() error {
	fr := r.faults
	if fr == nil || fr.done == nil {
		return nil
	}
	fr.cancel()
	<-fr.done
	r.files = append(r.files, fr.files...)
	var errs []error
	for _, ps := range r.Lab.PolicyServers {
		s := fr.servers[ps.Addr()]
		if s == nil {
			continue
		}
		for _, p := range s.ended {
			r.procs = slices.DeleteFunc(r.procs, func(o *Proc) bool { return o == p })
			info := ProcInfo{Name: p.Name, Proc: filepath.Base(p.Cmd.Path), PID: p.PID(), Fault: s.notes[p]}
			if p.Cmd.ProcessState != nil {
				info.Exit = strconv.Itoa(p.Cmd.ProcessState.ExitCode())
			}
			r.infos = append(r.infos, info)
		}
		for _, p := range s.started {
			if !slices.Contains(s.ended, p) {
				// With the Policy Servers at the front: stopAll goes
				// backwards, and the web server must stop before any of
				// them, or its agents tell server failures that were only
				// the end of the run.
				r.procs = append([]*Proc{p}, r.procs...)
			}
		}
	}
	fr.mu.Lock()
	defer fr.mu.Unlock()
	for i := range fr.records {
		rec := &fr.records[i]
		if rec.Applied && !fr.workStart.IsZero() {
			ms := float64(rec.Time.Sub(fr.workStart).Microseconds()) / 1000
			rec.OffsetMs = &ms
		}
		if !rec.Applied && rec.Error == "" {
			rec.Error = "not applied: the run ended before it fell due"
			if a := fr.faults[i].Anchor(); a != AnchorWorkload {
				if _, ok := fr.phaseAt[a]; !ok {
					rec.Error = fmt.Sprintf("not applied: the web server's agents never reached phase %s", a)
				}
			}
		}
		if rec.Error != "" {
			errs = append(errs, fmt.Errorf("%s:%d: fault %s %s on %s: %s", r.Lab.File, rec.Line, rec.When, rec.Action, rec.Server, rec.Error))
		}
	}
	r.summary.Faults = fr.records
	return errors.Join(errs...)
}

// run applies the faults as they fall due.
func (fr *faultRunner) run() {
	defer close(fr.done)
	applied := make([]bool, len(fr.faults))
	left := len(fr.faults)
	for left > 0 {
		now := time.Now()
		needPhases := false
		var due []int
		next := time.Duration(-1)
		for i, f := range fr.faults {
			if applied[i] {
				continue
			}
			anchor, ok := fr.anchor(f.Anchor())
			if !ok {
				needPhases = needPhases || f.Anchor() != AnchorWorkload
				continue
			}
			at := anchor.Add(f.At)
			if !now.Before(at) {
				due = append(due, i)
			} else if d := at.Sub(now); next < 0 || d < next {
				next = d
			}
		}
		slices.SortStableFunc(due, func(a, b int) int {
			return fr.dueAt(a).Compare(fr.dueAt(b))
		})
		for _, i := range due {
			if fr.ctx.Err() != nil {
				return
			}
			fr.apply(i)
			applied[i] = true
			left--
		}
		if len(due) > 0 {
			continue // applying took time: look again before sleeping
		}
		// Phases come from the trace files, read every phaseScan; a
		// fault due at a known time is applied on time.
		if needPhases {
			fr.scanPhases()
			if next < 0 || next > phaseScan {
				next = phaseScan
			}
		}
		var timer <-chan time.Time
		var t *time.Timer
		if next >= 0 {
			t = time.NewTimer(next)
			timer = t.C
		}
		select {
		case <-fr.ctx.Done():
		case <-fr.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if fr.ctx.Err() != nil {
			return
		}
	}
}

// phaseScan is how often the traces are read for a phase a fault waits for.
const phaseScan = 25 * time.Millisecond

func (fr *faultRunner) anchor(name string) (time.Time, bool) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if name == AnchorWorkload {
		return fr.workStart, !fr.workStart.IsZero()
	}
	t, ok := fr.phaseAt[name]
	return t, ok
}

func (fr *faultRunner) dueAt(i int) time.Time {
	a, _ := fr.anchor(fr.faults[i].Anchor())
	return a.Add(fr.faults[i].At)
}

// apply carries out fault i and records it.
func (fr *faultRunner) apply(i int) {
	f := fr.faults[i]
	s := fr.servers[f.addr]
	rec := FaultRecord{Line: f.Line, When: f.When(), Server: f.Server, Action: f.Action.String(), Address: s.addr, Time: time.Now()}
	where := fmt.Sprintf("%s:%d", fr.r.Lab.File, f.Line)
	var err error
	switch f.Action.Kind {
	case ActionKill:
		err = fr.kill(s, &rec, where)
	case ActionRestart:
		err = fr.restart(s, &rec, where)
	default:
		err = fr.control(s, f.Action, &rec)
	}
	rec.Applied = err == nil
	if err != nil {
		rec.Error = err.Error()
		fr.r.progress("fault %s (%s) %s on %s FAILED: %v", f.When(), where, rec.Action, f.Server, err)
	} else {
		fr.r.progress("fault %s (%s): %s %s: %s", f.When(), where, rec.Action, f.Server, rec.Result)
	}
	fr.mu.Lock()
	fr.records[i] = rec
	if f.Anchor() == AnchorWorkload {
		fr.pending--
		if fr.pending == 0 {
			close(fr.settled)
		}
	}
	fr.mu.Unlock()
}

func (fr *faultRunner) kill(s *faultServerState, rec *FaultRecord, where string) error {
	p := s.proc
	if p == nil {
		return fmt.Errorf("%s is not running (killed by an earlier fault)", s.name)
	}
	rec.PID = p.PID()
	p.Kill()
	s.proc, s.control = nil, ""
	s.ended = append(s.ended, p)
	fr.note(s, p, "killed (SIGKILL) by the fault at "+where)
	rec.Result = fmt.Sprintf("pid %d killed (SIGKILL); %s refuses connections", rec.PID, s.addr)
	return nil
}

// restart starts the server again with the same arguments: same address,
// store, registrations file and logs (appended to); a new trace file, since
// traces are per process. A server still running is stopped first, with
// SIGTERM, as an administrator restarting it would.
func (fr *faultRunner) restart(s *faultServerState, rec *FaultRecord, where string) error {
	r := fr.r
	how := "started again"
	if p := s.proc; p != nil {
		rec.PID = p.PID()
		err := p.Stop(stopGrace)
		s.proc, s.control = nil, ""
		s.ended = append(s.ended, p)
		fr.note(s, p, "stopped (SIGTERM) for the restart at "+where)
		if err != nil && !strings.Contains(err.Error(), "signal: terminated") {
			r.progress("stopping %s (pid %d) for its restart: %v", s.name, rec.PID, err)
		}
		how = fmt.Sprintf("pid %d stopped (SIGTERM) and started again", rec.PID)
	}
	stderr, err := os.OpenFile(r.path(s.ps.Host+".stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fr.files = append(fr.files, stderr)
	sctx, cancel := context.WithTimeout(fr.ctx, r.Opts.StartTimeout)
	defer cancel()
	p, err := r.start(sctx, ProcSpec{Name: s.ps.Host, Bin: r.bin("smps"), Args: s.args, Ready: notice.SmpsListening, Stderr: stderr, Role: rolePolicyServer},
		policyServerDown(s.ps.Host))
	if err != nil {
		return fmt.Errorf("%w (see %s)", err, r.path(s.ps.Host+".stderr"))
	}
	s.started = append(s.started, p)
	addr, err := controlAddr(p)
	if err != nil {
		p.Kill()
		s.ended = append(s.ended, p)
		fr.note(s, p, "killed: started without a control API")
		return err
	}
	s.proc, s.control = p, addr
	rec.NewPID = p.PID()
	rec.Result = fmt.Sprintf("%s: pid %d listens on %s", how, rec.NewPID, s.addr)
	return nil
}

// note keeps why a fault ended p, for summary.json and the lab's trace.
func (fr *faultRunner) note(s *faultServerState, p *Proc, text string) {
	fr.r.recordStop(p, text)
	if s.notes == nil {
		s.notes = map[*Proc]string{}
	}
	s.notes[p] = text
}

// controlResult is the part of smps's answer the lab reports.
type controlResult struct {
	Done string `json:"done"`
}

func (fr *faultRunner) control(s *faultServerState, a FaultAction, rec *FaultRecord) error {
	if s.proc == nil {
		return fmt.Errorf("%s is not running (killed by an earlier fault; restart it first)", s.name)
	}
	rec.PID = s.proc.PID()
	ctx, cancel := context.WithTimeout(fr.ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.control+a.controlPath(), nil)
	if err != nil {
		return err
	}
	req.Header.Set(controlHeader, "1")
	resp, err := fr.client.Do(req)
	if err != nil {
		return fmt.Errorf("control API of %s (pid %d) at %s: %w", s.name, rec.PID, s.control, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s (pid %d) refused %q: %s", s.name, rec.PID, a, strings.TrimSpace(string(body)))
	}
	var res controlResult
	if err := json.Unmarshal(body, &res); err != nil || res.Done == "" {
		return fmt.Errorf("%s (pid %d): unreadable control answer %q", s.name, rec.PID, body)
	}
	rec.Result = res.Done
	return nil
}

// traceTail reads a growing per-process trace file from where it left off.
type traceTail struct {
	off   int64
	skip  bool // not one of the web server's processes
	known bool // the first event has told which process it is
}

// scanPhases reads what the web server's processes appended to their
// traces and notes when each phase was first reached, by the time of the
// event itself: a trace line is written whole, when the socket did it.
func (fr *faultRunner) scanPhases() {
	files, _ := filepath.Glob(fr.r.path("*" + ".trace.jsonl"))
	for _, path := range files {
		t := fr.scan[path]
		if t == nil {
			t = &traceTail{}
			fr.scan[path] = t
		}
		if t.skip {
			continue
		}
		t.read(path, func(e *phaseEvent) bool {
			if !t.known {
				t.known = true
				if e.Role != "hla" && e.Role != "llawp" {
					t.skip = true
					return false
				}
			}
			if e.Phase == "" {
				return true
			}
			fr.mu.Lock()
			if at, ok := fr.phaseAt[e.Phase]; !ok || e.T.Before(at) {
				fr.phaseAt[e.Phase] = e.T
			}
			fr.mu.Unlock()
			return true
		})
	}
}

// phaseEvent is the part of a trace event the phase watch needs.
type phaseEvent struct {
	T     time.Time `json:"t"`
	Role  string    `json:"role"`
	Phase string    `json:"phase"`
}

// read hands each whole new line to fn until fn says stop; a line still
// being written waits for the next read.
func (t *traceTail) read(path string, fn func(*phaseEvent) bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return
	}
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return // a torn last line: read again next time
		}
		t.off += int64(len(line))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e phaseEvent
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		if !fn(&e) {
			return
		}
	}
}

// reportFaults prints the faults a run applied and, from the trace, which
// Policy Server answered the web server's requests between them.
func (r *Run) reportFaults(w io.Writer, evs []trace.Event) {
	recs := r.summary.Faults
	if len(recs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nFaults (%s):\n\n", r.Lab.File)
	var marks []answerMark
	for _, f := range recs {
		off := "      -"
		if f.OffsetMs != nil {
			off = fmt.Sprintf("%+7.2fs", *f.OffsetMs/1000)
		}
		what := f.Result
		if !f.Applied {
			what = "NOT APPLIED: " + f.Error
		} else {
			marks = append(marks, answerMark{f.Time, fmt.Sprintf("after %s %s", f.Action, f.Server)})
		}
		fmt.Fprintf(w, "  %s  %-22s %-18s %s\n", off, f.Action, f.Server, what)
	}
	writeAnswers(w, evs, r.Lab.ServerHosts(), marks)
}

type answerMark struct {
	t     time.Time
	label string
}

// writeAnswers counts the Responses the web server's workers received from
// each Policy Server between consecutive faults.
func writeAnswers(w io.Writer, evs []trace.Event, servers []string, marks []answerMark) {
	type window struct {
		from   time.Time
		label  string
		counts map[string]int
	}
	var first time.Time
	for _, e := range evs {
		if e.Op == trace.OpResponse && e.Role == "hla" && e.Phase == trace.PhaseRequests {
			first = e.T
			break
		}
	}
	if first.IsZero() {
		return
	}
	wins := []window{{from: first, label: "from the first request", counts: map[string]int{}}}
	for _, m := range marks {
		if m.t.After(first) {
			wins = append(wins, window{from: m.t, label: m.label, counts: map[string]int{}})
		}
	}
	for _, e := range evs {
		if e.Op != trace.OpResponse || e.Role != "hla" || e.Phase != trace.PhaseRequests {
			continue
		}
		i := len(wins) - 1
		for i > 0 && e.T.Before(wins[i].from) {
			i--
		}
		wins[i].counts[e.RemoteHost]++
	}
	fmt.Fprintf(w, "\nAnswers to the web server's requests, by Policy Server, between faults (from the trace):\n\n")
	for _, win := range wins {
		var parts []string
		for _, s := range servers {
			if n := win.counts[s]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", s, n))
			}
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(w, "  %-40s %s\n", win.label, strings.Join(parts, ", "))
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
