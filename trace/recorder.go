package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Options describe the process whose sockets a Recorder watches.
type Options struct {
	Proc string // process name as a learner knows it: w3wp.exe, LLAWP.exe, smps
	PID  int    // defaults to os.Getpid()
	Role string // hla, llawp, policyserver, smreghost, lab
	// Host is the lab host name of this process (wa1.shared.lab): the
	// local side of every connection is on this host.
	Host  string
	Hosts *Hosts
	// Payload keeps the bytes of every send and receive, for pcapng files.
	Payload bool
}

// Recorder writes events as JSON lines. A nil *Recorder records nothing, so
// code paths need no "is tracing on" checks.
type Recorder struct {
	opts Options
	seq  atomic.Uint64

	mu     sync.Mutex
	w      io.Writer
	c      io.Closer
	buf    []byte
	err    error
	closed bool
}

// NewRecorder writes events to w; a nil w records nothing but still names
// and resolves lab hosts. Each event is one Write call, so that a
// process killed with SIGKILL loses at most the event being written.
func NewRecorder(w io.Writer, opts Options) *Recorder {
	if opts.PID == 0 {
		opts.PID = os.Getpid()
	}
	r := &Recorder{opts: opts, w: w}
	// A recorder writing to the process's standard streams must not close
	// them: stdout may carry a go-plugin handshake, stderr the logs.
	if c, ok := w.(io.Closer); ok && w != os.Stdout && w != os.Stderr {
		r.c = c
	}
	return r
}

// Create opens <dir>/<proc>-<pid>.jsonl for a process's events.
func Create(dir string, opts Options) (*Recorder, error) {
	if opts.PID == 0 {
		opts.PID = os.Getpid()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("trace dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName(opts.Proc, opts.PID))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("trace file: %w", err)
	}
	return NewRecorder(f, opts), nil
}

// FileName is the per-process trace file name inside a run's folder.
func FileName(proc string, pid int) string {
	return fmt.Sprintf("%s-%d.trace.jsonl", proc, pid)
}

// Options returns what the recorder was created with.
func (r *Recorder) Options() Options {
	if r == nil {
		return Options{}
	}
	return r.opts
}

// Hosts is the recorder's name map (nil when none).
func (r *Recorder) Hosts() *Hosts {
	if r == nil {
		return nil
	}
	return r.opts.Hosts
}

// Emit fills in the process fields and the time, and writes the event.
func (r *Recorder) Emit(e Event) {
	if r == nil || r.w == nil {
		return
	}
	r.emitAs(e, r.opts.Proc, r.opts.PID, r.opts.Role)
}

// emitAs writes an event in another process's name: a Process Exit that
// the supervisor saw.
func (r *Recorder) emitAs(e Event, proc string, pid int, role string) {
	e.Proc, e.PID, e.Role = proc, pid, role
	if !r.opts.Payload {
		e.Data = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.err != nil {
		return
	}
	// Stamped under the lock so that the file is in time order: a merge
	// may then trust line order for events with equal times.
	if e.T.IsZero() {
		e.T = time.Now()
	}
	b, err := json.Marshal(&e)
	if err != nil {
		r.err = err
		return
	}
	r.buf = append(append(r.buf[:0], b...), '\n')
	if _, err := r.w.Write(r.buf); err != nil {
		r.err = err
	}
}

// Err reports the first write error: a trace that silently stopped would
// make every rendering after it a lie by omission.
func (r *Recorder) Err() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close stops recording and closes the file.
func (r *Recorder) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.err
	}
	r.closed = true
	if r.c != nil {
		if err := r.c.Close(); err != nil && r.err == nil {
			r.err = err
		}
	}
	return r.err
}

func (r *Recorder) nextConnID() string {
	return fmt.Sprintf("%d-%d", r.opts.PID, r.seq.Add(1))
}

// Open is what every agentlab process does with its --hosts, --trace and
// --source flags: load the lab's hosts map, name this process's host after
// its source address (unless o.Host already names it), and record into dir;
// with no dir it records nothing but still resolves and names lab hosts.
func Open(dir, hostsFile, source string, o Options) (*Recorder, error) {
	if hostsFile != "" {
		h, err := LoadHosts(hostsFile)
		if err != nil {
			return nil, err
		}
		o.Hosts = h
	}
	if o.Host == "" && source != "" {
		o.Host = o.Hosts.Name(source)
	}
	if dir == "" {
		return NewRecorder(nil, o), nil
	}
	return Create(dir, o)
}
