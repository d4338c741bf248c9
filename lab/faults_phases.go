package lab

// The phases a fault may wait for (after: hco), read from the web
// server's per-process traces as they grow: a trace line is written
// whole, when the socket did it, so the phase's time is the event's own,
// never when the lab happened to read it.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"time"
)

// phaseWatch reads the per-process traces in a run's folder from where
// it left off in each.
type phaseWatch struct {
	dir   string
	tails map[string]*traceTail
}

func newPhaseWatch(dir string) *phaseWatch {
	return &phaseWatch{dir: dir, tails: map[string]*traceTail{}}
}

// traceTail is where the watch is in one growing trace file.
type traceTail struct {
	off   int64
	skip  bool // not one of the web server's processes
	known bool // the first event has told which process it is
}

// scan reads what the web server's processes appended to their traces
// and tells reached the phase and time of each new event.
func (w *phaseWatch) scan(reached func(phase string, t time.Time)) {
	// Every process's trace, as trace.Create names it (merge reads the same).
	files, _ := filepath.Glob(filepath.Join(w.dir, "*.trace.jsonl"))
	for _, path := range files {
		t := w.tails[path]
		if t == nil {
			t = &traceTail{}
			w.tails[path] = t
		}
		if t.skip {
			continue
		}
		t.read(path, func(e *phaseEvent) bool {
			if !t.known {
				t.known = true
				if e.Role != "hla" && e.Role != "llawp" {
					t.skip = true
					return false
				}
			}
			if e.Phase != "" {
				reached(e.Phase, e.T)
			}
			return true
		})
	}
}

// phaseEvent is the part of a trace event the phase watch needs.
type phaseEvent struct {
	T     time.Time `json:"t"`
	Role  string    `json:"role"`
	Phase string    `json:"phase"`
}

// read hands each whole new line to fn until fn says stop; a line still
// being written waits for the next read.
func (t *traceTail) read(path string, fn func(*phaseEvent) bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return
	}
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return // a torn last line: read again next time
		}
		t.off += int64(len(line))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e phaseEvent
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		if !fn(&e) {
			return
		}
	}
}
