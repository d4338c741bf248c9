package policyserver

// The request model of the vendor's Policy Server (DOMAIN.md section 9):
// requests from every agent connection go into one queue, and a fixed
// number of worker threads ("Maximum Threads" in the management console)
// take them in order and evaluate them. A connection's own goroutine only
// reads a request, queues it, and writes the answer back: reading stays
// cheap and concurrent, and a slow user directory holds the workers, not
// the readers, so the queue grows as it does in the field.
//
// Every request goes through the queue, DoManagement and the
// administrator's requests included: the vendor's server serves them from
// the same threads, which is why management polls time out too when the
// directory is slow. Handshakes do not: they are the connection's own
// protocol, done by its reader before any request, and a server that made
// them wait behind the directory would hide the connection limit (the
// build-up shows connections opening fine and requests waiting).
//
// Workers are goroutines started when a request finds fewer than Threads
// busy, and ending when the queue is empty: at most Threads evaluate at
// once, in the queue's order, as fixed threads would, and an idle server
// holds none.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// DefaultThreads is the vendor's KB example of Maximum Threads.
const DefaultThreads = 8

// DefaultQueueBound is how many requests may wait for a worker thread.
// One request is in flight per connection, so with the default connection
// limit (256) the bound is never met; it matters with a larger
// --max-conns.
const DefaultQueueBound = 1024

// job is one request on its way through the queue. A connection reuses
// its job for each of its requests: one is in flight per socket.
type job struct {
	ctx    context.Context
	sc     *tli.ServerConn
	req    *tlipb.Request
	log    zerolog.Logger
	queued time.Time
	done   chan answer // buffered: a worker never waits for the reader
}

// answer is a worker's (or a flush's) answer to a job, with the queue as
// it left it, for the Response event.
type answer struct {
	resp *tlipb.Response
	q    trace.QueueState
}

// workers is the queue and its threads.
type workers struct {
	threads, bound int
	eval           func(*job) (*tlipb.Response, time.Duration)

	mu    sync.Mutex
	queue []*job // FIFO: queue[0] is next
	busy  int
}

func newWorkers(threads, bound int, eval func(*job) (*tlipb.Response, time.Duration)) *workers {
	return &workers{threads: threads, bound: bound, eval: eval}
}

func (w *workers) stateLocked() trace.QueueState {
	return trace.QueueState{Depth: len(w.queue), Bound: w.bound, Busy: w.busy, Threads: w.threads}
}

// State is the queue and threads now.
func (w *workers) State() trace.QueueState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stateLocked()
}

// submit queues j, or says false with the queue's state when it is full.
// joined is called with the state as j joined, before any worker can
// answer it: the trace's Request event must come before its Response.
func (w *workers) submit(j *job, joined func(trace.QueueState)) (trace.QueueState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) >= w.bound {
		return w.stateLocked(), false
	}
	j.queued = time.Now()
	w.queue = append(w.queue, j)
	start := w.busy < w.threads
	if start {
		w.busy++
	}
	joined(w.stateLocked())
	if start {
		go w.work()
	}
	return trace.QueueState{}, true
}

// work is one worker thread: it answers jobs in order until the queue is
// empty.
func (w *workers) work() {
	w.mu.Lock()
	for len(w.queue) > 0 {
		j := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		w.mu.Unlock()

		waited := time.Since(j.queued)
		resp, dir := w.eval(j)

		w.mu.Lock()
		q := w.stateLocked()
		q.Waited, q.Directory = waited, dir
		// The answer goes after the lock is released but, for the last
		// job, after busy is down too: a test that sees every answer
		// sees every worker gone but for its return.
		if len(w.queue) == 0 {
			w.busy--
			w.mu.Unlock()
			j.done <- answer{resp: resp, q: q}
			return
		}
		w.mu.Unlock()
		j.done <- answer{resp: resp, q: q}
		w.mu.Lock()
	}
	w.busy--
	w.mu.Unlock()
}

// flush drops every queued job, each answered with an error, as
// smpolicysrv -flushrequests does; it returns how many. Requests a worker
// has already taken are answered as usual.
func (w *workers) flush() int {
	w.mu.Lock()
	dropped := w.queue
	w.queue = nil
	q := w.stateLocked()
	w.mu.Unlock()
	for _, j := range dropped {
		a := answer{resp: failure("request flushed from the Policy Server's queue (flushrequests)"), q: q}
		a.q.Waited = time.Since(j.queued)
		j.done <- a
	}
	return len(dropped)
}

// queueFull is the answer to a request that found the queue full. The
// vendor's documentation gives no log line for it (DOMAIN.md has none),
// so the server logs a plain one.
func queueFull(log zerolog.Logger, req *tlipb.Request, q trace.QueueState) *tlipb.Response {
	log.Warn().Int("queue_depth", q.Depth).Int("threads", q.Threads).
		Msgf("Request queue full (%d requests waiting for %d worker threads): %s refused", q.Depth, q.Threads, tli.Describe(req))
	return failure(fmt.Sprintf("request queue full (%d waiting)", q.Depth))
}
