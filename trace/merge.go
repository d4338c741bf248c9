package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ReadEvents reads a JSON-lines trace. A torn last line (a process killed
// mid-write) is dropped, since it cannot be a whole event; any other bad
// line is an error naming the file and line.
func ReadEvents(name string, r io.Reader) ([]Event, error) {
	var out []Event
	br := bufio.NewReader(r)
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			var e Event
			if jerr := json.Unmarshal(b, &e); jerr != nil {
				if errors.Is(err, io.EOF) {
					break // torn last line
				}
				return out, fmt.Errorf("%s:%d: %v", name, line, jerr)
			}
			out = append(out, e)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, fmt.Errorf("%s: %w", name, err)
		}
	}
	return out, nil
}

// ReadFile reads one trace file.
func ReadFile(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadEvents(path, f)
}

// FirstEvent reads the first event of a trace file, which names its
// process (Proc, PID, Role); ok is false while the file has none.
func FirstEvent(path string) (e Event, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return Event{}, false, err
	}
	defer f.Close()
	b, err := bufio.NewReader(f).ReadBytes('\n')
	if errors.Is(err, io.EOF) {
		return Event{}, false, nil // empty, or its first line still being written
	}
	if err != nil {
		return Event{}, false, fmt.Errorf("%s: %w", path, err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, false, fmt.Errorf("%s:1: %v", path, err)
	}
	return e, true, nil
}

// Merge reads every per-process trace in dir (*.trace.jsonl) and returns
// their events in time order; events with the same time keep their order
// within their file.
func Merge(dir string) ([]Event, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.trace.jsonl"))
	if err != nil {
		return nil, err
	}
	var all []Event
	for _, f := range files {
		evs, err := ReadFile(f)
		if err != nil {
			return nil, err
		}
		all = append(all, evs...)
	}
	slices.SortStableFunc(all, func(a, b Event) int { return a.T.Compare(b.T) })
	return all, nil
}

// WriteEvents writes events as JSON lines.
func WriteEvents(w io.Writer, evs []Event) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range evs {
		if err := enc.Encode(&evs[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// MergeDir merges dir's per-process traces into dir/trace.jsonl.
func MergeDir(dir string) ([]Event, error) {
	evs, err := Merge(dir)
	if err != nil {
		return nil, err
	}
	return evs, WriteEventsFile(filepath.Join(dir, "trace.jsonl"), evs)
}

// WriteEventsFile writes events as a JSON-lines file (a merged trace).
func WriteEventsFile(path string, evs []Event) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteEvents(f, evs); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// Endpoint shows an address the way Process Monitor does with name
// resolution on: "wa1.shared.lab:50134".
func Endpoint(host, addr string) string {
	if host == "" {
		return addr
	}
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return host + addr[i:]
	}
	return host
}

// End names one end of a connection in a merged trace, which holds both
// ends of a connection between two recorded processes. Connection ids are
// unique per recorder, and a process has one; the proc and the local
// address keep apart two recorders of one process (a test's in-process
// server and client).
type End struct {
	PID        int
	Proc, Conn string
	Local      string
}

// EndOf is the end of a connection that e happened on.
func EndOf(e *Event) End { return End{e.PID, e.Proc, e.Conn, e.Local} }
