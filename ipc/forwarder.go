package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultForwarderCapacity is how many records a worker keeps while the
// LLAWP is away.
const DefaultForwarderCapacity = 1000

// closeTimeout bounds the wait for the LLAWP's summary when a Forward ends.
const closeTimeout = 2 * time.Second

// LogForwarder carries a worker's log records to the LLAWP's agent log. It
// is an io.Writer for zerolog (one JSON record per Write): records queue
// while no LLAWP is there, up to a bound beyond which new ones are dropped
// and counted, and Forward streams them when one is. Writing never blocks
// the worker on the LLAWP.
//
// When the queue is full the newest records are the ones dropped: the
// first records of an outage usually say what went wrong. The LLAWP learns
// how many were lost from a warning record sent ahead of the next batch.
type LogForwarder struct {
	capacity int
	wake     chan struct{}
	running  sync.Mutex

	mu         sync.Mutex
	queue      []LogRecord
	worker     WorkerID
	proc, role string
	sent       uint64
	dropped    uint64
	unreported uint64
}

// ForwarderStats are a LogForwarder's counters.
type ForwarderStats struct {
	Queued  int
	Sent    uint64
	Dropped uint64
}

// NewLogForwarder keeps up to capacity records while the LLAWP is away; 0
// means DefaultForwarderCapacity.
func NewLogForwarder(capacity int) *LogForwarder {
	if capacity <= 0 {
		capacity = DefaultForwarderCapacity
	}
	return &LogForwarder{capacity: capacity, wake: make(chan struct{}, 1)}
}

// SetWorker stamps the records that follow (and those queued without one)
// with the worker's id, once Register gave it.
func (f *LogForwarder) SetWorker(id WorkerID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.worker = id
}

// Write takes one zerolog JSON record. It always reports success: a log
// line the LLAWP cannot have is counted, not returned as an error into the
// worker's logger.
func (f *LogForwarder) Write(p []byte) (int, error) {
	f.Add(parseRecord(p))
	return len(p), nil
}

// Add queues a record, or drops and counts it when the queue is full.
func (f *LogForwarder) Add(r LogRecord) {
	f.mu.Lock()
	if r.Proc != "" {
		f.proc, f.role = r.Proc, r.Role
	}
	if len(f.queue) >= f.capacity {
		f.dropped++
		f.unreported++
		f.mu.Unlock()
		return
	}
	f.queue = append(f.queue, r)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (f *LogForwarder) Stats() ForwarderStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return ForwarderStats{Queued: len(f.queue), Sent: f.sent, Dropped: f.dropped}
}

// Forward streams queued and new records to l until ctx ends (then it
// sends what is queued, closes the stream and returns the close's error)
// or the stream breaks (it returns the error; records not sent stay
// queued, ready for the next Forward). Records the stream had accepted
// when it broke may be lost: gRPC does not say which ones arrived. One
// Forward runs at a time.
func (f *LogForwarder) Forward(ctx context.Context, l LLAWP) error {
	if !f.running.TryLock() {
		return errors.New("ipc: the log forwarder is already forwarding")
	}
	defer f.running.Unlock()
	// The stream outlives ctx long enough to deliver the last records and
	// hear the summary; closeTimeout bounds that.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	s, err := l.Log(sctx)
	if err != nil {
		return err
	}
	for {
		if err := f.flush(s); err != nil {
			return err
		}
		select {
		case <-f.wake:
		case <-ctx.Done():
			if err := f.flush(s); err != nil {
				return err
			}
			t := time.AfterFunc(closeTimeout, cancel)
			defer t.Stop()
			_, err := s.CloseAndSummary()
			return err
		}
	}
}

func (f *LogForwarder) flush(s LogSender) error {
	batch := f.take()
	for i, r := range batch {
		if err := s.Send(r); err != nil {
			f.putBack(batch[i:])
			return err
		}
		f.mu.Lock()
		f.sent++
		f.mu.Unlock()
	}
	return nil
}

func (f *LogForwarder) take() []LogRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	batch := f.queue
	f.queue = nil
	if f.unreported > 0 {
		notice := LogRecord{
			Time: time.Now(), Level: zerolog.WarnLevel.String(), PID: os.Getpid(), Proc: f.proc, Role: f.role,
			Message: fmt.Sprintf("%d log records dropped while the LLAWP was away (this worker keeps %d)", f.unreported, f.capacity),
		}
		batch = append([]LogRecord{notice}, batch...)
		f.unreported = 0
	}
	for i := range batch {
		if batch[i].Worker == 0 {
			batch[i].Worker = f.worker
		}
	}
	return batch
}

func (f *LogForwarder) putBack(rest []LogRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = slices.Concat(rest, f.queue)
	if n := len(f.queue) - f.capacity; n > 0 {
		f.queue = f.queue[:f.capacity]
		f.dropped += uint64(n)
		f.unreported += uint64(n)
	}
}

// recordKeys are the zerolog fields a LogRecord has a place for.
var recordKeys = []string{zerolog.TimestampFieldName, zerolog.LevelFieldName, zerolog.MessageFieldName, "pid", "tid", "proc", "role"}

func parseRecord(p []byte) LogRecord {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(p, &m); err != nil {
		return LogRecord{Time: time.Now(), Level: zerolog.InfoLevel.String(), PID: os.Getpid(), Message: strings.TrimSpace(string(p))}
	}
	var r LogRecord
	var t string
	_ = json.Unmarshal(m[zerolog.TimestampFieldName], &t)
	_ = json.Unmarshal(m[zerolog.LevelFieldName], &r.Level)
	_ = json.Unmarshal(m[zerolog.MessageFieldName], &r.Message)
	_ = json.Unmarshal(m["pid"], &r.PID)
	_ = json.Unmarshal(m["tid"], &r.TID)
	_ = json.Unmarshal(m["proc"], &r.Proc)
	_ = json.Unmarshal(m["role"], &r.Role)
	if ts, err := time.Parse(zerolog.TimeFieldFormat, t); err == nil {
		r.Time = ts
	} else {
		r.Time = time.Now()
	}
	if r.PID == 0 {
		r.PID = os.Getpid()
	}
	for _, k := range recordKeys {
		delete(m, k)
	}
	if len(m) > 0 {
		r.Fields, _ = json.Marshal(m)
	}
	return r
}
