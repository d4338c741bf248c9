package lab

// Faults a lab applies to its Policy Servers while the workload runs
// (docs/faults.md): the run's side. The schedule (faults_schedule.go)
// says when each falls due, the phase watch (faults_phases.go) when the
// web server reached a phase, and faults_servers.go does what each
// action does to its server; this file starts and stops them with the
// run and keeps the records summary.json and the report show.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/agentlab/agentlab/fault"
)

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

// faultRunner applies a run's faults from the schedule's goroutine, one
// at a time.
type faultRunner struct {
	r      *Run
	faults []Fault

	servers map[string]*faultServerState // by PolicyServer.Addr: a host may have several
	sched   *schedule                    // nil until startFaults
	phases  *phaseWatch
	ctx     context.Context
	cancel  context.CancelFunc
	client  *http.Client // to the servers' control APIs
	files   []*os.File

	mu      sync.Mutex
	records []FaultRecord
}

func (r *Run) hasFaults() bool { return len(r.Lab.Faults) > 0 }

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
	fr.sched, fr.phases = newSchedule(fr.faults), newPhaseWatch(r.Opts.Out)
	fr.client = &http.Client{}
	fr.records = make([]FaultRecord, len(fr.faults))
	for i, f := range fr.faults {
		fr.records[i] = FaultRecord{Line: f.Line, When: f.When(), Server: f.Server, Action: f.Action.String(), Address: fr.servers[f.addr].addr}
	}
	// From here on the faults' goroutine writes progress lines too.
	if r.Opts.Progress != nil {
		r.Opts.Progress = &lockedWriter{w: r.Opts.Progress}
	}
	r.progress("%d faults to apply (%s); each is logged here as it is applied", len(fr.faults), r.Lab.File)
	go fr.sched.run(fr.ctx, fr.apply, func() { fr.phases.scan(fr.sched.phaseReached) })
	return nil
}

// faultsWorkloadStarted anchors the faults that count from the workload.
func (r *Run) faultsWorkloadStarted() {
	if fr := r.faults; fr != nil && fr.sched != nil {
		fr.sched.workloadStarted(time.Now())
	}
}

// awaitFaults waits, after the workload, for the faults that count from
// its start and have not fallen due yet: a lab that restarts a server
// after its load ends still does so, and the run shows what followed.
func (r *Run) awaitFaults(ctx context.Context) error {
	fr := r.faults
	if fr == nil || fr.sched == nil {
		return nil
	}
	select {
	case <-fr.sched.settled:
		return nil
	default:
	}
	r.progress("the workload is over; waiting for the faults still to come")
	select {
	case <-fr.sched.settled:
		return nil
	case <-fr.sched.done:
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
	if fr == nil || fr.sched == nil {
		return nil
	}
	fr.cancel()
	<-fr.sched.done
	fr.client.CloseIdleConnections()
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
	workStart := fr.sched.workloadStart()
	fr.mu.Lock()
	defer fr.mu.Unlock()
	for i := range fr.records {
		rec := &fr.records[i]
		if rec.Applied && !workStart.IsZero() {
			ms := float64(rec.Time.Sub(workStart).Microseconds()) / 1000
			rec.OffsetMs = &ms
		}
		if !rec.Applied && rec.Error == "" {
			rec.Error = "not applied: the run ended before it fell due"
			if a := fr.faults[i].Anchor(); a != AnchorWorkload {
				if _, ok := fr.sched.anchor(a); !ok {
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

// apply carries out fault i and records it.
func (fr *faultRunner) apply(i int) {
	f := fr.faults[i]
	s := fr.servers[f.addr]
	rec := FaultRecord{Line: f.Line, When: f.When(), Server: f.Server, Action: f.Action.String(), Address: s.addr, Time: time.Now()}
	where := fmt.Sprintf("%s:%d", fr.r.Lab.File, f.Line)
	var err error
	switch f.Action.Kind {
	case fault.Kill:
		err = fr.kill(s, &rec, where)
	case fault.Restart:
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
	fr.mu.Unlock()
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
