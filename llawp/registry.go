// Package llawp is the low-level agent's work, apart from any process
// wiring (cmd/llawp): the registry of workers and their watches, the
// DoManagement poller that relays commands to them, the agent log and trace
// log (WA.log, WATrace.log) that the workers' records end up in, the idle
// linger, the watch on the owner process, the LLAWP service (Service)
// that ipc serves over gRPC, and Run, which is one LLAWP process with them.
package llawp

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/agentlab/agentlab/ipc"
)

// DefaultWatchQueue is how many events a watcher may fall behind before
// the next ones are dropped for it.
const DefaultWatchQueue = 64

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// WatchQueue bounds each watcher's backlog; 0 means DefaultWatchQueue.
	WatchQueue int
	// OnCount is told the number of registered workers after each change
	// (the linger's input). It runs under the registry's lock: it must not
	// call back into the registry.
	OnCount func(workers int)
	Now     func() time.Time
}

// Registry holds the registered workers and fans management events out to
// their watchers. A watcher that does not keep up loses events (counted,
// and reported to it with the next event it gets) rather than holding up
// the others: one stuck worker must not delay a cache flush for all.
type Registry struct {
	opts RegistryOptions

	mu      sync.Mutex
	next    ipc.WorkerID
	seq     uint64
	workers map[ipc.WorkerID]*worker
	closed  bool
}

type worker struct {
	ipc.WorkerStatus
	watchers []*watcher
}

type watcher struct {
	ch     chan ipc.ManagementEvent
	missed uint64
	stop   func() bool
}

// NewRegistry returns an empty registry.
func NewRegistry(o RegistryOptions) *Registry {
	if o.WatchQueue <= 0 {
		o.WatchQueue = DefaultWatchQueue
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Registry{opts: o, workers: map[ipc.WorkerID]*worker{}}
}

// Register adds a worker and returns its id; ids are never reused.
func (r *Registry) Register(w ipc.Worker) ipc.WorkerID {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.workers[r.next] = &worker{WorkerStatus: ipc.WorkerStatus{ID: r.next, Worker: w, Registered: r.opts.Now()}}
	r.countChanged()
	return r.next
}

// Unregister removes a worker and ends its watches.
func (r *Registry) Unregister(id ipc.WorkerID) (ipc.Worker, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[id]
	if w == nil {
		return ipc.Worker{}, fmt.Errorf("%w %d", ipc.ErrUnknownWorker, id)
	}
	for _, s := range w.watchers {
		s.stop()
		close(s.ch)
	}
	delete(r.workers, id)
	r.countChanged()
	return w.Worker, nil
}

func (r *Registry) countChanged() {
	if r.opts.OnCount != nil {
		r.opts.OnCount(len(r.workers))
	}
}

// Len is the number of registered workers.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.workers)
}

// Watch subscribes to the events relayed to worker id. The channel is
// closed when ctx ends, the worker unregisters or the registry closes.
func (r *Registry) Watch(ctx context.Context, id ipc.WorkerID) (<-chan ipc.ManagementEvent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[id]
	if w == nil || r.closed {
		return nil, fmt.Errorf("%w %d", ipc.ErrUnknownWorker, id)
	}
	s := &watcher{ch: make(chan ipc.ManagementEvent, r.opts.WatchQueue)}
	w.watchers = append(w.watchers, s)
	s.stop = context.AfterFunc(ctx, func() { r.unwatch(id, s) })
	return s.ch, nil
}

func (r *Registry) unwatch(id ipc.WorkerID, s *watcher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[id]
	if w == nil {
		return // Unregister closed it already
	}
	if i := slices.Index(w.watchers, s); i >= 0 {
		w.watchers = slices.Delete(w.watchers, i, i+1)
		close(s.ch)
	}
}

// Publish numbers ev and offers it to every watcher of every worker
// without waiting for any. It returns how many watchers got it and how
// many had no room.
func (r *Registry) Publish(ev ipc.ManagementEvent) (delivered, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	ev.Seq = r.seq
	if ev.Name == "" {
		ev.Name = ipc.EventName(ev.Code)
	}
	for _, w := range r.workers {
		for _, s := range w.watchers {
			e := ev
			e.Missed = s.missed
			select {
			case s.ch <- e:
				s.missed = 0
				delivered++
			default:
				s.missed++
				w.EventsDropped++
				dropped++
			}
		}
	}
	return delivered, dropped
}

// CountLog attributes a log record to its worker: by id, or by pid for a
// record written before its worker registered.
func (r *Registry) CountLog(id ipc.WorkerID, pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.workers[id]; w != nil {
		w.LogRecords++
		return
	}
	for _, w := range r.workers {
		if w.PID == pid {
			w.LogRecords++
			return
		}
	}
}

// Report records a worker's sockets, as its last Report said.
func (r *Registry) Report(id ipc.WorkerID, servers []ipc.ServerSockets) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[id]
	if w == nil {
		return fmt.Errorf("%w %d", ipc.ErrUnknownWorker, id)
	}
	w.Servers, w.Reported = slices.Clone(servers), r.opts.Now()
	return nil
}

// Workers lists the registered workers in the order they registered.
func (r *Registry) Workers() []ipc.WorkerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ipc.WorkerStatus, 0, len(r.workers))
	for _, w := range r.workers {
		st := w.WorkerStatus
		st.Watchers = len(w.watchers)
		st.Servers = slices.Clone(st.Servers)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ipc.WorkerStatus) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Close ends every watch, so that the workers' Watch streams finish
// cleanly when the LLAWP stops; later Watch calls fail.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, w := range r.workers {
		for _, s := range w.watchers {
			s.stop()
			close(s.ch)
		}
		w.watchers = nil
	}
}
