package ipc

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"
)

// HCLogger routes go-plugin's own logs (it speaks hclog) into a zerolog
// logger, so that they land in the process's log files in its layout. On
// the owner side this also carries the LLAWP's stderr lines: go-plugin
// parses them and re-logs them through this logger at their own level.
func HCLogger(log zerolog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclogLevel(log.GetLevel()),
		JSONFormat: true,
		Output:     &zerologSink{log: log},
		TimeFormat: hclogTime,
	})
}

// hclogTime is the only @timestamp layout go-plugin's stderr parser accepts.
const hclogTime = "2006-01-02T15:04:05.000000Z07:00"

// hclogLevel keeps go-plugin's trace chatter out even of a debug log.
func hclogLevel(l zerolog.Level) hclog.Level {
	switch {
	case l <= zerolog.DebugLevel:
		return hclog.Debug
	case l == zerolog.InfoLevel:
		return hclog.Info
	case l == zerolog.WarnLevel:
		return hclog.Warn
	case l == zerolog.Disabled:
		return hclog.Off
	}
	return hclog.Error
}

// reserved are fields the zerolog side owns: a plugin's "pid" must not
// replace the logging process's pid in the `[pid/tid]` prefix.
var reserved = map[string]bool{
	"pid": true, "tid": true, "proc": true, "role": true,
	zerolog.LevelFieldName: true, zerolog.TimestampFieldName: true, zerolog.MessageFieldName: true,
}

type zerologSink struct {
	log zerolog.Logger
	mu  sync.Mutex
	buf []byte
}

func (s *zerologSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		s.line(s.buf[:i])
		s.buf = s.buf[i+1:]
	}
}

func (s *zerologSink) line(b []byte) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		s.log.Info().Msg(strings.TrimSpace(string(b)))
		return
	}
	lvl, _ := m["@level"].(string)
	msg, _ := m["@message"].(string)
	fields := map[string]any{}
	for k, v := range m {
		switch k {
		case "@level", "@message", "@timestamp", "@caller":
			continue
		case "@module":
			k = "module"
		}
		if reserved[k] {
			k = "plugin_" + k
		}
		fields[k] = v
	}
	s.log.WithLevel(zerologLevel(lvl)).Fields(fields).Msg(msg)
}

func zerologLevel(s string) zerolog.Level {
	switch strings.ToLower(s) {
	case "trace":
		return zerolog.TraceLevel
	case "debug":
		return zerolog.DebugLevel
	case "info":
		return zerolog.InfoLevel
	case "warn", "warning":
		return zerolog.WarnLevel
	case "error", "fatal", "panic":
		return zerolog.ErrorLevel
	}
	return zerolog.InfoLevel
}

// PluginStderr turns the zerolog JSON lines written to it into the hclog
// JSON lines that go-plugin's owner side parses from a plugin's stderr, so
// that an LLAWP warning reaches the HLA's log as a warning (other lines are
// demoted to debug there). w is the LLAWP's real standard error, taken
// before plugin.Serve swaps os.Stderr for its stdio pipe.
func PluginStderr(w io.Writer) io.Writer {
	return &hclogLines{w: w}
}

type hclogLines struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (h *hclogLines) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf = append(h.buf, p...)
	for {
		i := bytes.IndexByte(h.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := convertLine(h.buf[:i])
		h.buf = h.buf[i+1:]
		if _, err := h.w.Write(line); err != nil {
			return len(p), err
		}
	}
}

func convertLine(b []byte) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return append(slices.Clone(b), '\n')
	}
	out := map[string]any{}
	var lvl, msg, t string
	_ = json.Unmarshal(m[zerolog.LevelFieldName], &lvl)
	_ = json.Unmarshal(m[zerolog.MessageFieldName], &msg)
	_ = json.Unmarshal(m[zerolog.TimestampFieldName], &t)
	for k, v := range m {
		switch k {
		case zerolog.LevelFieldName, zerolog.MessageFieldName, zerolog.TimestampFieldName:
			continue
		}
		out[k] = v
	}
	ts, err := time.Parse(zerolog.TimeFieldFormat, t)
	if err != nil {
		ts = time.Now()
	}
	out["@timestamp"] = ts.Format(hclogTime)
	out["@level"] = hclogLevelName(lvl)
	out["@message"] = msg
	line, err := json.Marshal(out)
	if err != nil {
		return append(slices.Clone(b), '\n')
	}
	return append(line, '\n')
}

func hclogLevelName(zl string) string {
	switch zl {
	case "trace", "debug", "info", "warn":
		return zl
	case "error", "fatal", "panic":
		return "error"
	}
	return "info"
}
