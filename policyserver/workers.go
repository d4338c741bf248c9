package policyserver

// The request model of the vendor's Policy Server (DOMAIN.md section 9):
// requests from every agent connection go into one queue, and a fixed
// number of worker threads ("Maximum Threads" in the management console)
// take them in order and evaluate them. A connection's own goroutine
// reads a request, hands it to a thread (through the queue when none is
// free), and writes the answer back: reading stays cheap and concurrent,
// and a slow user directory holds the threads, not the readers, so the
// queue grows as it does in the field.
//
// Every request goes through the queue, DoManagement and the
// administrator's requests included: the vendor's server serves them from
// the same threads, which is why management polls time out too when the
// directory is slow. Handshakes do not: they are the connection's own
// protocol, done by its reader before any request, and a server that made
// them wait behind the directory would hide the connection limit (the
// build-up shows connections opening fine and requests waiting).
//
// At most Threads requests are evaluated at once, in the queue's order, as
// fixed threads would. A request that finds a thread free and nobody
// waiting is evaluated at once on its connection's goroutine, which is
// that thread for the while: handing it to another goroutine would cost
// two wake-ups per request (IsProtected on loopback went from 23 to 40 us).
// A request that must wait joins the queue, and worker goroutines take
// the queue over from a thread that finishes while it is not empty; they
// end when it is, so an idle server holds none.

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

// admission is what submit did with a job.
type admission int

const (
	// runNow: a thread was free and nobody waiting; the caller
	// evaluates the job at once with runNow.
	runNow admission = iota
	// queued: the job waits; its answer comes on its done channel.
	queued
	// full: the queue is full; the job was refused.
	full
)

// submit admits j: to a free thread, to the queue, or not at all (with
// the queue's state). joined is called with the state as j joined, before
// any worker can answer it: the trace's Request event must come before
// its Response.
func (w *workers) submit(j *job, joined func(trace.QueueState)) (trace.QueueState, admission) {
	w.mu.Lock()
	defer w.mu.Unlock()
	j.queued = time.Now()
	if len(w.queue) == 0 && w.busy < w.threads {
		w.busy++
		joined(w.stateLocked())
		return trace.QueueState{}, runNow
	}
	if len(w.queue) >= w.bound {
		return w.stateLocked(), full
	}
	w.queue = append(w.queue, j)
	// A job queues only when every thread is busy, and a busy thread
	// leaves the queue to a worker before it stops: no worker to start.
	joined(w.stateLocked())
	return trace.QueueState{}, queued
}

// runNow evaluates j, admitted to a free thread, on the caller's
// goroutine; a queue that built up meanwhile goes to a worker.
func (w *workers) runNow(j *job) answer {
	resp, dir := w.eval(j)
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.stateLocked()
	q.Directory = dir
	if len(w.queue) > 0 {
		go w.work() // the thread, busy still, goes on with the queue
	} else {
		w.busy--
	}
	return answer{resp: resp, q: q}
}

// work is one worker thread, counted in busy by whoever started it: it
// answers jobs in order until the queue is empty.
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
