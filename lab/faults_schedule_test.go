package lab

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/trace"
)

// sixFaults are faults for faultLab: two anchored on hco, four on the
// workload, a kill and a restart due at the same moment.
const sixFaults = `  - {after: hco, server: smps2, action: reset}
  - {at: 100ms, server: smps2, action: stall 2s}
  - {at: 300ms, server: smps1, action: kill}
  - {at: 300ms, server: smps1, action: restart}
  - {at: 400ms, server: smps1, action: reject-handshakes 3153}
  - {at: 50ms, after: hco, server: smps10, action: stop-accepting queue}
`

// TestSchedule runs a lab's faults through the schedule and the phase
// watch in virtual time: each fault is applied exactly at its time after
// its anchor, in file order for the same moment, never before its phase
// is in a web server process's trace, and a fault whose phase never
// comes is never applied.
func TestSchedule(t *testing.T) {
	l, err := Parse("lab.yaml", "", []byte(faultLab+"faults:\n"+sixFaults+"  - {after: management, server: smps2, action: resume}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// killTakes is how long the kill's apply takes: the process's exit.
	const killTakes = 150 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s, watch := newSchedule(l.Faults), newPhaseWatch(dir)
		type appliedAt struct {
			i  int
			at time.Time
		}
		var mu sync.Mutex
		var got []appliedAt
		applied := func() []appliedAt {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(got)
		}
		apply := func(i int) {
			mu.Lock()
			got = append(got, appliedAt{i, time.Now()})
			mu.Unlock()
			if l.Faults[i].Action.Kind == fault.Kill {
				time.Sleep(killTakes)
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go s.run(ctx, apply, func() { watch.scan(s.phaseReached) })

		// A trace of another role, and an agent's trace whose hco event
		// is still being written, anchor nothing.
		hcoAt := time.Now().Add(-time.Second)
		writeTrace(t, filepath.Join(dir, "smps-1.trace.jsonl"), false, trace.Event{T: hcoAt, Role: "policyserver", Phase: trace.PhaseHCO, Op: trace.OpAccept})
		agent := filepath.Join(dir, "w3wp.exe-2.trace.jsonl")
		writeTrace(t, agent, true,
			trace.Event{T: hcoAt.Add(-time.Second), Role: "hla", Phase: trace.PhaseBootstrap, Op: trace.OpConnect},
			trace.Event{T: hcoAt, Role: "hla", Phase: trace.PhaseHCO, Op: trace.OpConnect})
		time.Sleep(5 * phaseScan)
		synctest.Wait()
		if a := applied(); len(a) != 0 {
			t.Fatalf("faults applied before their phase was reached: %v", a)
		}
		if at, ok := s.anchor(trace.PhaseBootstrap); !ok || !at.Equal(hcoAt.Add(-time.Second)) {
			t.Errorf("bootstrap anchor %v, %v: want the event's own time %v", at, ok, hcoAt.Add(-time.Second))
		}

		// The rest of the line arrives: both hco faults are due at once
		// (hco was a second ago), at the next reading of the traces.
		f, err := os.OpenFile(agent, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(trace.Event{T: hcoAt, Role: "hla", Phase: trace.PhaseHCO, Op: trace.OpConnect})
		f.Write(append(b[len(b)/2:], '\n'))
		f.Close()
		completed := time.Now()
		time.Sleep(2 * phaseScan)
		synctest.Wait()
		a := applied()
		if len(a) != 2 || a[0].i != 0 || a[1].i != 5 || !a[0].at.Equal(a[1].at) || a[0].at.Sub(completed) > 2*phaseScan {
			t.Fatalf("after hco: applied %v, want faults 0 then 5 within %s of %v", a, 2*phaseScan, completed)
		}
		if at, _ := s.anchor(trace.PhaseHCO); !at.Equal(hcoAt) {
			t.Errorf("hco anchor %v, want the event's own time %v", at, hcoAt)
		}

		// The workload: each of its faults exactly at its time, the
		// restart after the kill though both are due at 300ms, and the
		// reject, due meanwhile, after the restart.
		workStart := time.Now()
		s.workloadStarted(workStart)
		<-s.settled
		want := []struct {
			i     int
			after time.Duration
		}{{1, 100 * time.Millisecond}, {2, 300 * time.Millisecond}, {3, 300*time.Millisecond + killTakes}, {4, 300*time.Millisecond + killTakes}}
		a = applied()[2:]
		if len(a) != len(want) {
			t.Fatalf("workload faults applied: %v, want %v", a, want)
		}
		for k, w := range want {
			if a[k].i != w.i || a[k].at.Sub(workStart) != w.after {
				t.Errorf("applied #%d: fault %d %s after the workload's start; want fault %d at %s", k, a[k].i, a[k].at.Sub(workStart), w.i, w.after)
			}
		}

		// Management never comes: its fault waits until the run ends.
		time.Sleep(time.Minute)
		cancel()
		<-s.done
		if n := len(applied()); n != 6 {
			t.Errorf("%d faults applied, want 6: the management one never", n)
		}
		if _, ok := s.anchor(trace.PhaseManagement); ok {
			t.Error("management anchored, though no trace reached it")
		}
	})
}

// TestScheduleSettled: settled closes when the last workload-anchored
// fault is applied, at once for a lab with none, whatever the phase
// faults do.
func TestScheduleSettled(t *testing.T) {
	cases := []struct {
		name   string
		faults string
		open   bool // settled still open once the workload faults are due
	}{
		{"phase faults only", "  - {after: hco, server: smps1, action: kill}\n", false},
		{"workload faults", "  - {at: 1s, server: smps1, action: kill}\n  - {at: 2s, server: smps1, action: restart}\n", false},
		{"one not due", "  - {at: 1s, server: smps1, action: kill}\n  - {at: 1h, server: smps1, action: restart}\n", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := Parse("lab.yaml", "", []byte(faultLab+"faults:\n"+c.faults))
			if err != nil {
				t.Fatal(err)
			}
			synctest.Test(t, func(t *testing.T) {
				s := newSchedule(l.Faults)
				ctx, cancel := context.WithCancel(t.Context())
				go s.run(ctx, func(int) {}, func() {})
				s.workloadStarted(time.Now())
				time.Sleep(3 * time.Second)
				synctest.Wait()
				select {
				case <-s.settled:
					if c.open {
						t.Error("settled with a workload fault still to come")
					}
				default:
					if !c.open {
						t.Error("not settled")
					}
				}
				cancel()
				<-s.done
			})
		})
	}
}
