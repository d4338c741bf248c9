package policyserver

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

// gatedWorkers are workers whose evaluation waits for the test: every
// job's evaluation blocks until release, and the order evaluations start
// in is kept.
type gatedWorkers struct {
	*workers
	release chan struct{}
	mu      sync.Mutex
	order   []uint64
}

func newGated(threads, bound int) *gatedWorkers {
	g := &gatedWorkers{release: make(chan struct{})}
	g.workers = newWorkers(threads, bound, func(j *job) (*tlipb.Response, time.Duration) {
		g.mu.Lock()
		g.order = append(g.order, j.req.Id)
		g.mu.Unlock()
		<-g.release
		return &tlipb.Response{Result: tlipb.Result_YES}, time.Millisecond
	})
	return g
}

func testJob(id uint64) *job {
	return &job{ctx: context.Background(), req: &tlipb.Request{Id: id}, log: zerolog.Nop(), done: make(chan answer, 1)}
}

// TestWorkers: at most Threads evaluate, at most Bound wait, the rest are
// refused; jobs start in the order they came; a flush answers every
// queued job with an error and leaves the running ones alone; and no
// worker is left once the queue is empty (synctest fails a test whose
// goroutines outlive it).
func TestWorkers(t *testing.T) {
	cases := []struct {
		name           string
		threads, bound int
		jobs           int
		flush          bool
		wantRefused    int
		wantJoined     []trace.QueueState // as each queued job joined
	}{
		// The first job finds the thread free and waits for nothing.
		{"one thread, room for all", 1, 10, 4, false, 0, []trace.QueueState{
			{Depth: 0, Bound: 10, Busy: 1, Threads: 1}, {Depth: 1, Bound: 10, Busy: 1, Threads: 1},
			{Depth: 2, Bound: 10, Busy: 1, Threads: 1}, {Depth: 3, Bound: 10, Busy: 1, Threads: 1}}},
		{"bound respected", 1, 2, 5, false, 2, []trace.QueueState{
			{Depth: 0, Bound: 2, Busy: 1, Threads: 1}, {Depth: 1, Bound: 2, Busy: 1, Threads: 1}, {Depth: 2, Bound: 2, Busy: 1, Threads: 1}}},
		{"threads in parallel", 3, 1, 5, false, 1, []trace.QueueState{
			{Depth: 0, Bound: 1, Busy: 1, Threads: 3}, {Depth: 0, Bound: 1, Busy: 2, Threads: 3}, {Depth: 0, Bound: 1, Busy: 3, Threads: 3},
			{Depth: 1, Bound: 1, Busy: 3, Threads: 3}}},
		{"flush", 2, 10, 7, true, 0, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGated(c.threads, c.bound)
				var joined []trace.QueueState
				var accepted []*job
				refused := 0
				for i := range c.jobs {
					j := testJob(uint64(i + 1))
					// Each job is taken by a thread, when one is free,
					// before the next comes: the states are exact.
					switch q, adm := g.submit(j, func(q trace.QueueState) { joined = append(joined, q) }); adm {
					case runNow:
						accepted = append(accepted, j)
						go func() { j.done <- g.runNow(j) }() // as its connection would
					case queued:
						accepted = append(accepted, j)
					case full:
						refused++
						if q.Depth != c.bound || q.Busy != c.threads {
							t.Errorf("job %d refused with %+v, want a full queue", i+1, q)
						}
					}
					synctest.Wait()
				}
				if refused != c.wantRefused {
					t.Errorf("%d refused, want %d", refused, c.wantRefused)
				}
				if c.wantJoined != nil && !slices.Equal(joined, c.wantJoined) {
					t.Errorf("joined at\n%+v\nwant\n%+v", joined, c.wantJoined)
				}
				if st := g.State(); st.Busy != min(c.threads, len(accepted)) {
					t.Errorf("busy %d with %d jobs, want %d", st.Busy, len(accepted), min(c.threads, len(accepted)))
				}
				running := min(c.threads, len(accepted))
				if c.flush {
					if n := g.flush(); n != len(accepted)-running {
						t.Errorf("flush dropped %d, want %d", n, len(accepted)-running)
					}
					for _, j := range accepted[running:] {
						a := <-j.done
						if a.resp.Result != tlipb.Result_FAILURE || a.q.Depth != 0 {
							t.Errorf("flushed job %d answered %v %q with %+v, want FAILURE and an empty queue", j.req.Id, a.resp.Result, a.resp.Message, a.q)
						}
					}
					accepted = accepted[:running]
				}
				close(g.release)
				for _, j := range accepted {
					if a := <-j.done; a.resp.Result != tlipb.Result_YES || a.q.Directory != time.Millisecond {
						t.Errorf("job %d answered %v with %+v", j.req.Id, a.resp.Result, a.q)
					}
				}
				var want []uint64
				for _, j := range accepted {
					want = append(want, j.req.Id)
				}
				if !slices.Equal(g.order, want) {
					t.Errorf("evaluated in the order %v, want %v", g.order, want)
				}
				synctest.Wait()
				if st := g.State(); st.Busy != 0 || st.Depth != 0 {
					t.Errorf("after the last answer: %+v", st)
				}
			})
		})
	}
}

// TestWorkersWaited: a job's answer says how long it waited in the queue.
func TestWorkersWaited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorkers(1, 10, func(*job) (*tlipb.Response, time.Duration) {
			time.Sleep(100 * time.Millisecond)
			return &tlipb.Response{Result: tlipb.Result_YES}, 0
		})
		jobs := []*job{testJob(1), testJob(2), testJob(3)}
		for _, j := range jobs {
			if _, adm := w.submit(j, func(trace.QueueState) {}); adm == runNow {
				go func() { j.done <- w.runNow(j) }()
			}
		}
		for i, j := range jobs {
			if a := <-j.done; a.q.Waited != time.Duration(i)*100*time.Millisecond {
				t.Errorf("job %d waited %s, want %s", i+1, a.q.Waited, time.Duration(i)*100*time.Millisecond)
			}
		}
	})
}
