// Package logging builds the zerolog loggers every agentlab process uses:
// JSON lines for tools, and beside them a human file close to the vendor's
// layout, `[pid/tid][date][LEVEL] message key=value`, so a reader of the
// seed's logs feels at home. The agent log itself (WA.log) is stricter:
// AgentLogLine writes it exactly as the vendor does, `[pid/tid][date]
// message`. Files roll over with lumberjack, as the vendor's LogFileSize
// does.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/natefinch/lumberjack.v2"
)

// VendorTime is the vendor's log date format: "Tue Apr 18 2017 23:23:35".
const VendorTime = "Mon Jan 02 2006 15:04:05"

// TimeFormat is the time of a JSON record. zerolog's default keeps whole
// seconds, which cannot tell the order of the records that several
// processes write within one second: the LLAWP merges its workers'
// records into WA.log by this time.
const TimeFormat = time.RFC3339Nano

// AgentLogLine is one line of the agent log (WA.log) in the vendor's
// layout: `[pid/tid][Tue Apr 18 2017 23:23:35] message`, in local time, with
// no level and nothing after the message.
func AgentLogLine(pid, tid int, t time.Time, msg string) string {
	return fmt.Sprintf("[%d/%d][%s] %s\n", pid, tid, t.Local().Format(VendorTime), msg)
}

// Options choose where a process logs.
type Options struct {
	Proc string // process name: smps, w3wp.exe, LLAWP.exe
	Role string // policyserver, hla, llawp, smreghost, lab
	// File is the human log (vendor layout); "" for none.
	File string
	// JSONFile receives the same records as JSON lines; "" for none.
	JSONFile string
	// Stderr also writes human lines to standard error (never stdout: a
	// go-plugin plugin's stdout belongs to the handshake).
	Stderr bool
	// MaxSizeMB rolls a file over at this size; 0 means 10.
	MaxSizeMB int
	// Append keeps an existing file (the vendor's LogAppend); otherwise it
	// is truncated at start.
	Append bool
	Level  zerolog.Level
	// JSON receives every record as a zerolog JSON line as well (an HLA's
	// forwarder to the LLAWP's WA.log).
	JSON io.Writer
}

// Logger is a configured logger and the files behind it.
type Logger struct {
	zerolog.Logger
	closers []io.Closer
}

// Close flushes and closes the log files.
func (l *Logger) Close() error {
	var first error
	for _, c := range l.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	l.closers = nil
	return first
}

// Stamp is the hook of every agentlab logger: it adds the OS thread id
// (the "tid" of the vendor's prefix) and the time in TimeFormat.
type Stamp struct{}

func (Stamp) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Int("tid", syscall.Gettid()).Str(zerolog.TimestampFieldName, time.Now().Format(TimeFormat))
}

// New opens the log files and returns a logger carrying proc, pid and role.
func New(o Options) (*Logger, error) {
	l := &Logger{}
	var writers []io.Writer
	open := func(path string) (io.Writer, error) {
		if !o.Append {
			if err := os.Truncate(path, 0); err != nil && !os.IsNotExist(err) {
				return nil, fmt.Errorf("log file %s: %w", path, err)
			}
		}
		// Fail now, with the path, rather than at the first log line.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		f.Close()
		size := o.MaxSizeMB
		if size <= 0 {
			size = 10
		}
		lj := &lumberjack.Logger{Filename: path, MaxSize: size, MaxBackups: 3}
		l.closers = append(l.closers, lj)
		return lj, nil
	}
	if o.File != "" {
		w, err := open(o.File)
		if err != nil {
			return nil, err
		}
		writers = append(writers, VendorWriter(w))
	}
	if o.JSONFile != "" {
		w, err := open(o.JSONFile)
		if err != nil {
			l.Close()
			return nil, err
		}
		writers = append(writers, w)
	}
	if o.Stderr {
		writers = append(writers, VendorWriter(os.Stderr))
	}
	if o.JSON != nil {
		writers = append(writers, o.JSON)
	}
	var out io.Writer = io.Discard
	if len(writers) == 1 {
		out = writers[0]
	} else if len(writers) > 1 {
		out = zerolog.MultiLevelWriter(writers...)
	}
	l.Logger = zerolog.New(out).Level(o.Level).Hook(Stamp{}).With().
		Str("proc", o.Proc).Int("pid", os.Getpid()).Str("role", o.Role).Logger()
	return l, nil
}

// VendorWriter renders zerolog's JSON as `[pid/tid][date][LEVEL] message k=v`.
func VendorWriter(w io.Writer) io.Writer {
	return zerolog.ConsoleWriter{
		Out:           w,
		NoColor:       true,
		PartsOrder:    []string{"prefix", zerolog.MessageFieldName},
		FieldsExclude: []string{"prefix", "pid", "tid", "proc", "role"},
		FormatPrepare: func(evt map[string]any) error {
			ts := time.Now()
			if s, ok := evt[zerolog.TimestampFieldName].(string); ok {
				if t, err := time.Parse(TimeFormat, s); err == nil {
					ts = t
				}
			}
			delete(evt, zerolog.TimestampFieldName)
			lvl, _ := evt[zerolog.LevelFieldName].(string)
			delete(evt, zerolog.LevelFieldName)
			evt["prefix"] = fmt.Sprintf("[%v/%v][%s][%s]", num(evt["pid"]), num(evt["tid"]), ts.Local().Format(VendorTime), strings.ToUpper(lvl))
			return nil
		},
		FormatPartValueByName: func(v any, name string) string {
			if v == nil {
				return ""
			}
			return fmt.Sprint(v)
		},
	}
}

func num(v any) string {
	if f, ok := v.(float64); ok {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprint(v)
}
