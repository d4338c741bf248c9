package lab

// When the faults fall due. The schedule knows the anchors (the
// workload's start, the phases the web server's traces show) and hands
// each fault to whoever applies it, one at a time, in the order they fall
// due (file order for the same moment), so that a restart never races
// the kill before it. It knows nothing of processes or smps, so a test
// runs it in virtual time (testing/synctest).

import (
	"context"
	"slices"
	"sync"
	"time"
)

// phaseScan is how often the traces are read for a phase a fault waits for.
const phaseScan = 25 * time.Millisecond

type schedule struct {
	faults []Fault
	wake   chan struct{} // an anchor came: look again
	// settled is closed when no workload-anchored fault is left to apply;
	// done when run returns.
	settled, done chan struct{}

	mu        sync.Mutex
	workStart time.Time
	phaseAt   map[string]time.Time
	pending   int // workload-anchored faults not applied yet
}

func newSchedule(faults []Fault) *schedule {
	s := &schedule{faults: faults, wake: make(chan struct{}, 1), settled: make(chan struct{}), done: make(chan struct{}),
		phaseAt: map[string]time.Time{}}
	for _, f := range faults {
		if f.Anchor() == AnchorWorkload {
			s.pending++
		}
	}
	if s.pending == 0 {
		close(s.settled)
	}
	return s
}

// workloadStarted anchors the faults that count from the workload.
func (s *schedule) workloadStarted(t time.Time) {
	s.mu.Lock()
	s.workStart = t
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// workloadStart is when the workload started; zero before.
func (s *schedule) workloadStart() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workStart
}

// phaseReached notes an event of phase at t; the phase's anchor is its
// earliest event, whatever order the traces are read in.
func (s *schedule) phaseReached(phase string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.phaseAt[phase]; !ok || t.Before(at) {
		s.phaseAt[phase] = t
	}
}

func (s *schedule) anchor(name string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == AnchorWorkload {
		return s.workStart, !s.workStart.IsZero()
	}
	t, ok := s.phaseAt[name]
	return t, ok
}

func (s *schedule) dueAt(i int) time.Time {
	a, _ := s.anchor(s.faults[i].Anchor())
	return a.Add(s.faults[i].At)
}

// run hands each fault to apply as it falls due, until every fault was
// applied or ctx ends. While a fault waits for a phase, scanPhases is
// called every phaseScan to read the traces; a fault due at a known time
// is applied on time.
func (s *schedule) run(ctx context.Context, apply func(i int), scanPhases func()) {
	defer close(s.done)
	applied := make([]bool, len(s.faults))
	left := len(s.faults)
	for left > 0 {
		now := time.Now()
		needPhases := false
		var due []int
		next := time.Duration(-1)
		for i, f := range s.faults {
			if applied[i] {
				continue
			}
			anchor, ok := s.anchor(f.Anchor())
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
			return s.dueAt(a).Compare(s.dueAt(b))
		})
		for _, i := range due {
			if ctx.Err() != nil {
				return
			}
			apply(i)
			applied[i] = true
			left--
			s.appliedOne(i)
		}
		if len(due) > 0 {
			continue // applying took time: look again before sleeping
		}
		if needPhases {
			scanPhases()
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
		case <-ctx.Done():
		case <-s.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// appliedOne settles the schedule once the last workload-anchored fault
// was applied: the run need not wait for the others.
func (s *schedule) appliedOne(i int) {
	if s.faults[i].Anchor() != AnchorWorkload {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending--
	if s.pending == 0 {
		close(s.settled)
	}
}
