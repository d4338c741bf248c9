package llawp

import (
	"bytes"
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/logging"
)

// DefaultPending is how many records a log keeps in memory: before the
// ACO says where the logs go, and afterwards while they wait for their
// turn (DefaultWindow).
const DefaultPending = 1000

// DefaultWindow is how long a record waits, after the time it was written,
// for older records still on their way to the agent log, so that WA.log is
// in time order. A worker's records reach the LLAWP over its Log stream a
// few milliseconds after they were written, and those it wrote before it
// could reach the LLAWP (its own bootstrap and HCO phase) only once it has
// registered. [our choice]
const DefaultWindow = 2 * time.Second

// SinkOptions say whose logs a Sink writes.
type SinkOptions struct {
	Proc string // LLAWP.exe
	Role string // llawp
	PID  int    // 0: this process
	// Stderr receives the LLAWP's own records at warn and above, as zerolog
	// JSON (ipc.PluginStderr turns them into what go-plugin relays to the
	// owner's log); nil for none.
	Stderr io.Writer
	Level  zerolog.Level
	// Pending bounds the records a log keeps in memory; 0 means
	// DefaultPending.
	Pending int
	// Window is how long a record waits for older ones; 0 means
	// DefaultWindow.
	Window time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// SinkConfig is what the ACO says about the logs, and the folder for them.
type SinkConfig struct {
	Dir string
	// ACO gives LogFile, LogFileName, LogAppend, LogFileSize, TraceFile,
	// TraceFileName and TraceFileSize. Only the base of a file name is
	// used: an ACO written for Windows may carry a full path.
	ACO conf.ACO
}

// SinkPaths are the files a Sink writes; "" for a log that is off.
type SinkPaths struct {
	AgentLog, AgentJSON string
	TraceLog, TraceJSON string
}

// SinkStats count the agent log's records.
type SinkStats struct {
	Written uint64 // written to the files
	// Late counts records that came when a record written after them had
	// already been written: they are written at once, out of order, rather
	// than lost. Their delay was longer than the window.
	Late uint64
	// Dropped counts records that found the memory full (before Open, the
	// newest are dropped; after, none is: the oldest is written early).
	Dropped uint64
}

// Sink is the LLAWP's side of the logs: the agent log (WA.log in the
// vendor's layout, and JSON lines beside it), which gets the LLAWP's own
// records and every worker's, and the trace log (WATrace.log) of startup
// and management. The ACO, fetched after bootstrap, names the files: until
// Open, records wait in memory (bounded; the excess is dropped and
// counted).
//
// Records are written in the order of the time they were written, whoever
// wrote them: at Open, what waited is written sorted; afterwards each
// record waits out the window in memory, so that a worker's record that
// arrives a little after the LLAWP's own later ones still goes before
// them. WA.log has the vendor's layout and nothing else: a record's level
// and fields (ours, for debugging) are in the JSON lines only, and records
// below info are not in WA.log.
type Sink struct {
	opts SinkOptions

	mu      sync.Mutex
	agent   *stream
	trace   *stream
	closers []io.Closer
	paths   SinkPaths
	opened  bool
	closed  bool
	seq     uint64
	timer   *time.Timer
}

// stream is one log (agent or trace): its writers once open, and the
// records waiting for their turn.
type stream struct {
	agent       bool      // the vendor's agent log layout; else our own
	human, json io.Writer // nil before Open, and for a log that is off
	held        entryHeap
	last        time.Time // of the last record written
	wrote       bool
	stats       SinkStats
	dropped     int // before Open, for the notice written at Open
}

// entry is one record, as the files need it.
type entry struct {
	t        time.Time
	seq      uint64 // arrival order: ties keep it
	level    zerolog.Level
	pid, tid int
	msg      string
	err      string // the record's error field, the end of its WA.log line
	json     []byte // the JSON line, for WA.jsonl
}

type entryHeap []*entry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	if c := h[i].t.Compare(h[j].t); c != 0 {
		return c < 0
	}
	return h[i].seq < h[j].seq
}
func (h entryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)   { *h = append(*h, x.(*entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// NewSink starts a sink that keeps records until Open.
func NewSink(o SinkOptions) *Sink {
	if o.PID == 0 {
		o.PID = os.Getpid()
	}
	if o.Pending <= 0 {
		o.Pending = DefaultPending
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sink{opts: o, agent: &stream{agent: true}, trace: &stream{}}
}

func (s *Sink) logger(w io.Writer) zerolog.Logger {
	return zerolog.New(w).Level(s.opts.Level).Hook(logging.Stamp{}).With().
		Str("proc", s.opts.Proc).Int("pid", s.opts.PID).Str("role", s.opts.Role).Logger()
}

// Logger is the LLAWP's own logger, into the agent log.
func (s *Sink) Logger() zerolog.Logger { return s.logger(&sinkWriter{s: s, agent: true}) }

// Tracer is the trace log's logger.
func (s *Sink) Tracer() zerolog.Logger { return s.logger(&sinkWriter{s: s}) }

type sinkWriter struct {
	s     *Sink
	agent bool
}

func (w *sinkWriter) Write(p []byte) (int, error) { return w.WriteLevel(zerolog.NoLevel, p) }

func (w *sinkWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	st := w.s.trace
	if w.agent {
		st = w.s.agent
	}
	e := ownEntry(l, p)
	w.s.mu.Lock()
	err := w.s.add(st, e)
	w.s.mu.Unlock()
	// The file first: stderr leads to the owner, which may be gone.
	if w.agent && l >= zerolog.WarnLevel && l != zerolog.NoLevel && w.s.opts.Stderr != nil {
		_, _ = w.s.opts.Stderr.Write(p)
	}
	return len(p), err
}

// ownEntry reads back what the LLAWP's own logger wrote: the fields the
// files need, and the line itself for the JSON file.
func ownEntry(l zerolog.Level, p []byte) *entry {
	var rec struct {
		Time    string `json:"time"`
		PID     int    `json:"pid"`
		TID     int    `json:"tid"`
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	e := &entry{level: l, json: slices.Clone(p)}
	if err := json.Unmarshal(p, &rec); err != nil {
		// Not zerolog's JSON: keep the line as its message.
		e.msg, e.t = strings.TrimSpace(string(p)), time.Now()
		return e
	}
	e.pid, e.tid, e.msg, e.err = rec.PID, rec.TID, rec.Message, rec.Error
	t, err := time.Parse(logging.TimeFormat, rec.Time)
	if err != nil {
		t = time.Now()
	}
	e.t = t
	return e
}

// add takes one record; called with s.mu held.
func (s *Sink) add(st *stream, e *entry) error {
	switch {
	case s.closed:
		return errors.New("llawp: the log sink is closed")
	case !s.opened:
		if len(st.held) >= s.opts.Pending {
			st.dropped++
			st.stats.Dropped++
			return nil
		}
	case st.human == nil && st.json == nil:
		return nil // this log is off in the ACO
	case st.wrote && e.t.Before(st.last):
		// Too late for its place: a later record is in the file already.
		st.stats.Late++
		return s.writeEntry(st, e)
	}
	s.seq++
	e.seq = s.seq
	heap.Push(&st.held, e)
	if !s.opened {
		return nil
	}
	var err error
	for len(st.held) > s.opts.Pending {
		err = errors.Join(err, s.writeEntry(st, heap.Pop(&st.held).(*entry)))
	}
	s.schedule()
	return err
}

// release writes, in time order, the records whose window has passed by
// now; called with s.mu held.
func (s *Sink) release(now time.Time) error {
	var errs []error
	for _, st := range []*stream{s.agent, s.trace} {
		for len(st.held) > 0 && !st.held[0].t.After(now.Add(-s.opts.Window)) {
			errs = append(errs, s.writeEntry(st, heap.Pop(&st.held).(*entry)))
		}
	}
	return errors.Join(errs...)
}

// releaseAll writes every record that waits, in time order; called with
// s.mu held.
func (s *Sink) releaseAll() error {
	var errs []error
	for _, st := range []*stream{s.agent, s.trace} {
		for len(st.held) > 0 {
			errs = append(errs, s.writeEntry(st, heap.Pop(&st.held).(*entry)))
		}
	}
	return errors.Join(errs...)
}

// schedule arms the timer for the earliest record waiting; called with
// s.mu held.
func (s *Sink) schedule() {
	var due time.Time
	for _, st := range []*stream{s.agent, s.trace} {
		if len(st.held) > 0 && (due.IsZero() || st.held[0].t.Before(due)) {
			due = st.held[0].t
		}
	}
	if due.IsZero() {
		return
	}
	d := due.Add(s.opts.Window).Sub(s.opts.Now())
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.tick)
		return
	}
	s.timer.Reset(d)
}

func (s *Sink) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.opened {
		return
	}
	// An error here has no caller to go to: the records are lost to the
	// file, as a write that fails under zerolog is.
	_ = s.release(s.opts.Now())
	s.schedule()
}

// writeEntry writes one record to its files; called with s.mu held.
func (s *Sink) writeEntry(st *stream, e *entry) error {
	if !st.wrote || e.t.After(st.last) {
		st.last = e.t
	}
	st.wrote = true
	st.stats.Written++
	var errs []error
	if st.human != nil {
		if st.agent {
			if e.level >= zerolog.InfoLevel || e.level == zerolog.NoLevel {
				msg := e.msg
				if e.err != "" {
					msg += ": " + e.err
				}
				_, err := io.WriteString(st.human, logging.AgentLogLine(e.pid, e.tid, e.t, msg))
				errs = append(errs, err)
			}
		} else {
			_, err := st.human.Write(e.json)
			errs = append(errs, err)
		}
	}
	if st.json != nil {
		_, err := st.json.Write(e.json)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// WriteRecord writes a worker's record to the agent log, under the
// worker's pid and tid so that the vendor layout shows who wrote it.
func (s *Sink) WriteRecord(r ipc.LogRecord) error {
	e := recordEntry(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opened && s.agent.human == nil && s.agent.json == nil && !s.closed {
		return errors.New("llawp: the agent log is off (LogFile=NO)")
	}
	return s.add(s.agent, e)
}

func recordEntry(r ipc.LogRecord) *entry {
	lvl, err := zerolog.ParseLevel(r.Level)
	if err != nil || r.Level == "" {
		lvl = zerolog.InfoLevel
	}
	line, errText := recordLine(r)
	return &entry{t: r.Time, level: lvl, pid: r.PID, tid: r.TID, msg: r.Message, err: errText, json: line}
}

// recordFirst are written ahead of a record's own fields, in zerolog's
// order, and win over fields of the same name.
var recordFirst = []string{zerolog.LevelFieldName, zerolog.TimestampFieldName, "proc", "pid", "tid", "role", zerolog.MessageFieldName}

// recordLine is a worker's record as a JSON line, and its error field.
func recordLine(r ipc.LogRecord) ([]byte, string) {
	var b bytes.Buffer
	b.WriteByte('{')
	put := func(k string, v any) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(v)
		if err != nil {
			vb, _ = json.Marshal(fmt.Sprint(v))
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	level := r.Level
	if level == "" {
		level = zerolog.InfoLevel.String()
	}
	var errText string
	put(zerolog.LevelFieldName, level)
	put(zerolog.TimestampFieldName, r.Time.Format(logging.TimeFormat))
	put("proc", r.Proc)
	put("pid", r.PID)
	put("tid", r.TID)
	put("role", r.Role)
	if len(r.Fields) > 0 {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(r.Fields, &fields); err != nil {
			// Keep the record; show what came rather than guess at it.
			put("fields", string(r.Fields))
		} else {
			_ = json.Unmarshal(fields[zerolog.ErrorFieldName], &errText)
			keys := make([]string, 0, len(fields))
			for k := range fields {
				if !slices.Contains(recordFirst, k) {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			for _, k := range keys {
				put(k, fields[k])
			}
		}
	}
	put(zerolog.MessageFieldName, r.Message)
	b.WriteString("}\n")
	return b.Bytes(), errText
}

// Open creates the log files the ACO asks for and writes what waited.
func (s *Sink) Open(cfg SinkConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opened || s.closed {
		return errors.New("llawp: the log sink was opened or closed already")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("log folder: %w", err)
	}
	aco := cfg.ACO
	if aco.LogFile {
		human, js, err := s.open(s.agent, cfg.Dir, aco.LogFileName, "WA.log", aco.LogFileSize, aco.LogAppend)
		if err != nil {
			return err
		}
		s.paths.AgentLog, s.paths.AgentJSON = human, js
	}
	if aco.TraceFile {
		human, js, err := s.open(s.trace, cfg.Dir, aco.TraceFileName, "WATrace.log", aco.TraceFileSize, aco.LogAppend)
		if err != nil {
			s.closeFiles()
			s.agent.human, s.agent.json, s.paths = nil, nil, SinkPaths{}
			return err
		}
		s.paths.TraceLog, s.paths.TraceJSON = human, js
	}
	s.opened = true
	now := s.opts.Now()
	for _, st := range []*stream{s.agent, s.trace} {
		if st.human == nil && st.json == nil {
			st.held = nil // this log is off: what waited for it goes nowhere
			continue
		}
		if st.dropped > 0 {
			msg := fmt.Sprintf("%d log lines written before the log files were known were dropped (%d kept).", st.dropped, s.opts.Pending)
			line, _ := recordLine(ipc.LogRecord{
				Level: zerolog.WarnLevel.String(), PID: s.opts.PID, Proc: s.opts.Proc, Role: s.opts.Role, Time: now, Message: msg,
			})
			s.seq++
			heap.Push(&st.held, &entry{t: now, seq: s.seq, level: zerolog.WarnLevel, pid: s.opts.PID, tid: syscall.Gettid(), msg: msg, json: line})
			st.dropped = 0
		}
	}
	// What waited is written in time order, up to the window; the rest
	// waits its turn with the records to come.
	err := s.release(now)
	s.schedule()
	return err
}

// baseName takes the file name from a path of either OS.
func baseName(name, def string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || name == "." || name == ".." {
		return def
	}
	return name
}

// open creates a log's two files, the human one and the JSON lines, and
// returns their paths.
func (s *Sink) open(st *stream, dir, name, def string, sizeMB int, appendTo bool) (string, string, error) {
	name = baseName(name, def)
	human := filepath.Join(dir, name)
	js := filepath.Join(dir, strings.TrimSuffix(name, filepath.Ext(name))+".jsonl")
	if sizeMB <= 0 {
		sizeMB = 10
	}
	var ws []io.Writer
	for _, path := range []string{human, js} {
		flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
		if !appendTo {
			flags |= os.O_TRUNC
		}
		// Opened here so that a bad path fails now, with its name, rather
		// than at the first line.
		f, err := os.OpenFile(path, flags, 0o644)
		if err != nil {
			return "", "", fmt.Errorf("log file: %w", err)
		}
		f.Close()
		lj := &lumberjack.Logger{Filename: path, MaxSize: sizeMB, MaxBackups: 3}
		s.closers = append(s.closers, lj)
		ws = append(ws, lj)
	}
	st.human, st.json = ws[0], ws[1]
	if !st.agent {
		// The trace log is ours: our layout, level and fields.
		st.human = logging.VendorWriter(ws[0])
	}
	return human, js, nil
}

// IsOpen reports whether Open has succeeded: an LLAWP that fails before
// its ACO arrives opens the sink with the defaults, so that the reason
// reaches a WA.log.
func (s *Sink) IsOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

// Paths are the files in use.
func (s *Sink) Paths() SinkPaths {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths
}

// Stats are the agent log's counters.
func (s *Sink) Stats() SinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agent.stats
}

// Close writes what waits, in time order, and closes the files; later
// records are refused.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	var err error
	if s.opened && !s.closed {
		err = s.releaseAll()
	}
	s.closed = true
	return errors.Join(err, s.closeFiles())
}

func (s *Sink) closeFiles() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c.Close())
	}
	s.closers = nil
	return errors.Join(errs...)
}
