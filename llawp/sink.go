package llawp

import (
	"bytes"
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

// DefaultPending is how many lines the sink keeps before the ACO says
// where the logs go.
const DefaultPending = 1000

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
	// Pending bounds the lines kept until Open; 0 means DefaultPending.
	Pending int
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

// Sink is the LLAWP's side of the logs: the agent log (WA.log in the
// vendor's layout, and JSON lines beside it), which gets the LLAWP's own
// records and every worker's, and the trace log (WATrace.log) of startup
// and management. The ACO, fetched after bootstrap, names the files: until
// Open, lines wait in memory (bounded; the excess is dropped and counted).
type Sink struct {
	opts SinkOptions

	mu      sync.Mutex
	agent   *stream
	trace   *stream
	closers []io.Closer
	paths   SinkPaths
	opened  bool
	closed  bool
}

// stream is one log (agent or trace): its writer once open, its pending
// lines before.
type stream struct {
	w       io.Writer // nil before Open, and for a log that is off
	pending [][]byte
	dropped int
}

// NewSink starts a sink that keeps lines until Open.
func NewSink(o SinkOptions) *Sink {
	if o.PID == 0 {
		o.PID = os.Getpid()
	}
	if o.Pending <= 0 {
		o.Pending = DefaultPending
	}
	return &Sink{opts: o, agent: &stream{}, trace: &stream{}}
}

// tidHook adds the OS thread id, the "tid" of the vendor's prefix.
type tidHook struct{}

func (tidHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) { e.Int("tid", syscall.Gettid()) }

func (s *Sink) logger(w io.Writer) zerolog.Logger {
	return zerolog.New(w).Level(s.opts.Level).Hook(tidHook{}).With().Timestamp().
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
	w.s.mu.Lock()
	err := w.s.write(st, p)
	w.s.mu.Unlock()
	// The file first: stderr leads to the owner, which may be gone.
	if w.agent && l >= zerolog.WarnLevel && l != zerolog.NoLevel && w.s.opts.Stderr != nil {
		_, _ = w.s.opts.Stderr.Write(p)
	}
	return len(p), err
}

// write takes one JSON line; called with s.mu held.
func (s *Sink) write(st *stream, line []byte) error {
	switch {
	case s.closed:
		return errors.New("llawp: the log sink is closed")
	case !s.opened:
		if len(st.pending) >= s.opts.Pending {
			st.dropped++
			return nil
		}
		st.pending = append(st.pending, slices.Clone(line))
		return nil
	case st.w == nil:
		return nil // this log is off in the ACO
	}
	_, err := st.w.Write(line)
	return err
}

// WriteRecord writes a worker's record to the agent log, under the
// worker's pid and tid so that the vendor layout shows who wrote it.
func (s *Sink) WriteRecord(r ipc.LogRecord) error {
	line := recordLine(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opened && s.agent.w == nil && !s.closed {
		return errors.New("llawp: the agent log is off (LogFile=NO)")
	}
	return s.write(s.agent, line)
}

// recordFirst are written ahead of a record's own fields, in zerolog's
// order, and win over fields of the same name.
var recordFirst = []string{zerolog.LevelFieldName, zerolog.TimestampFieldName, "proc", "pid", "tid", "role", zerolog.MessageFieldName}

func recordLine(r ipc.LogRecord) []byte {
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
	put(zerolog.LevelFieldName, level)
	put(zerolog.TimestampFieldName, r.Time.Format(zerolog.TimeFieldFormat))
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
	return b.Bytes()
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
		w, human, js, err := s.open(cfg.Dir, aco.LogFileName, "WA.log", aco.LogFileSize, aco.LogAppend)
		if err != nil {
			return err
		}
		s.agent.w, s.paths.AgentLog, s.paths.AgentJSON = w, human, js
	}
	if aco.TraceFile {
		w, human, js, err := s.open(cfg.Dir, aco.TraceFileName, "WATrace.log", aco.TraceFileSize, aco.LogAppend)
		if err != nil {
			s.closeFiles()
			s.agent.w, s.paths = nil, SinkPaths{}
			return err
		}
		s.trace.w, s.paths.TraceLog, s.paths.TraceJSON = w, human, js
	}
	s.opened = true
	for _, st := range []*stream{s.agent, s.trace} {
		pending, dropped := st.pending, st.dropped
		st.pending, st.dropped = nil, 0
		for _, line := range pending {
			_ = s.write(st, line)
		}
		if dropped > 0 {
			_ = s.write(st, recordLine(ipc.LogRecord{
				Level: zerolog.WarnLevel.String(), PID: s.opts.PID, Proc: s.opts.Proc, Role: s.opts.Role, Time: time.Now(),
				Message: fmt.Sprintf("%d log lines written before the log files were known were dropped (%d kept)", dropped, s.opts.Pending),
			}))
		}
	}
	return nil
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

func (s *Sink) open(dir, name, def string, sizeMB int, appendTo bool) (io.Writer, string, string, error) {
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
			return nil, "", "", fmt.Errorf("log file: %w", err)
		}
		f.Close()
		lj := &lumberjack.Logger{Filename: path, MaxSize: sizeMB, MaxBackups: 3}
		s.closers = append(s.closers, lj)
		ws = append(ws, lj)
	}
	return io.MultiWriter(logging.VendorWriter(ws[0]), ws[1]), human, js, nil
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

// Close closes the files; later lines are refused.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.closeFiles()
}

func (s *Sink) closeFiles() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c.Close())
	}
	s.closers = nil
	return errors.Join(errs...)
}
