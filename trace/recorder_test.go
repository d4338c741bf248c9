package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineWriter is an in-memory trace file that also checks the recorder's
// promise of one whole line per Write.
type lineWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	bad    []string
	closed int
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if len(p) == 0 || p[len(p)-1] != '\n' || bytes.Count(p, []byte("\n")) != 1 {
		w.bad = append(w.bad, string(p))
	}
	return w.buf.Write(p)
}

func (w *lineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed++
	return nil
}

// events parses every line, failing the test on a line that is not an Event.
func (w *lineWriter) events(t *testing.T) []Event {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) > 0 {
		t.Fatalf("writes that are not exactly one line: %q", w.bad)
	}
	return parseEvents(t, w.buf.Bytes())
}

func parseEvents(t *testing.T, data []byte) []Event {
	t.Helper()
	var evs []Event
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var e Event
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestRecorderEmit(t *testing.T) {
	w := &lineWriter{}
	r := NewRecorder(w, Options{Proc: "w3wp.exe", Role: "hla"})
	if got := r.Options().PID; got != os.Getpid() {
		t.Errorf("default PID %d, want %d", got, os.Getpid())
	}
	before := time.Now()
	given := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	r.Emit(Event{Op: OpRequest, Conn: "1-1", Len: 12, Phase: PhaseHCO, Note: "GetHostConfig hco", Data: []byte("dropped")})
	r.Emit(Event{T: given, Op: OpResponse, Proc: "liar", PID: 1, Role: "liar"})
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	evs := w.events(t)
	if len(evs) != 2 || w.writes != 2 {
		t.Fatalf("%d events in %d writes, want 2 in 2", len(evs), w.writes)
	}
	for i, e := range evs {
		if e.Proc != "w3wp.exe" || e.PID != os.Getpid() || e.Role != "hla" {
			t.Errorf("event %d: proc/pid/role = %q/%d/%q", i, e.Proc, e.PID, e.Role)
		}
	}
	e := evs[0]
	if e.T.Before(before.Add(-time.Second)) || e.T.After(time.Now().Add(time.Second)) {
		t.Errorf("time %v not filled with now", e.T)
	}
	if e.Op != OpRequest || e.Conn != "1-1" || e.Len != 12 || e.Phase != PhaseHCO || e.Note != "GetHostConfig hco" {
		t.Errorf("event fields lost: %+v", e)
	}
	if e.Data != nil {
		t.Errorf("payload kept without Options.Payload: %q", e.Data)
	}
	if !evs[1].T.Equal(given) {
		t.Errorf("a given time was replaced: %v", evs[1].T)
	}

	// The wire names are DESIGN.md's.
	var raw map[string]any
	line, _, _ := bytes.Cut(w.buf.Bytes(), []byte("\n"))
	if err := json.Unmarshal(line, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"t", "proc", "pid", "role", "op", "conn", "len", "phase", "note"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("key %q missing from %s", k, line)
		}
	}
}

func TestRecorderPayload(t *testing.T) {
	w := &lineWriter{}
	r := NewRecorder(w, Options{Proc: "smps", PID: 7, Payload: true})
	r.Emit(Event{Op: OpSend, Len: 3, Data: []byte{0, 1, 0xff}})
	evs := w.events(t)
	if len(evs) != 1 || !bytes.Equal(evs[0].Data, []byte{0, 1, 0xff}) {
		t.Fatalf("payload not kept: %+v", evs)
	}
	if evs[0].PID != 7 {
		t.Errorf("PID %d, want the given 7", evs[0].PID)
	}
}

func TestRecorderConcurrentEmit(t *testing.T) {
	w := &lineWriter{}
	r := NewRecorder(w, Options{Proc: "httpd", Payload: true})
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				r.Emit(Event{Op: OpSend, Conn: fmt.Sprint(g), Len: i, Data: bytes.Repeat([]byte{byte(g)}, i%50)})
			}
		})
	}
	wg.Wait()
	evs := w.events(t)
	if len(evs) != workers*each {
		t.Fatalf("%d events, want %d", len(evs), workers*each)
	}
	next := map[string]int{}
	for i, e := range evs {
		if next[e.Conn] != e.Len {
			t.Fatalf("worker %s: event %d out of order", e.Conn, e.Len)
		}
		next[e.Conn]++
		if i > 0 && e.T.Before(evs[i-1].T) {
			t.Fatalf("line %d is older than the line before it", i)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestRecorderWriteError(t *testing.T) {
	f := &failWriter{}
	r := NewRecorder(f, Options{Proc: "p"})
	r.Emit(Event{Op: OpSend})
	r.Emit(Event{Op: OpSend})
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Err() = %v", err)
	}
	if f.n != 1 {
		t.Errorf("%d writes after a failed one, want none", f.n-1)
	}
	if err := r.Close(); err == nil {
		t.Error("Close hides the write error")
	}
}

func TestRecorderClose(t *testing.T) {
	w := &lineWriter{}
	r := NewRecorder(w, Options{Proc: "p"})
	r.Emit(Event{Op: OpSend})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Emit(Event{Op: OpSend})
	if n := len(w.events(t)); n != 1 {
		t.Errorf("%d events, want 1 (none after Close)", n)
	}
	if w.closed != 1 {
		t.Errorf("writer closed %d times, want 1", w.closed)
	}
}

func TestRecorderDoesNotCloseStdStreams(t *testing.T) {
	for _, f := range []*os.File{os.Stdout, os.Stderr} {
		r := NewRecorder(f, Options{Proc: "p"})
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Stat(); err != nil {
			t.Fatalf("%s closed by Recorder.Close: %v", f.Name(), err)
		}
	}
}

func TestCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "traces")
	r, err := Create(dir, Options{Proc: "LLAWP.exe", PID: 4242, Role: "llawp"})
	if err != nil {
		t.Fatal(err)
	}
	r.Emit(Event{Op: OpConnect, Note: "one"})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening appends: a restarted process with a reused pid keeps both.
	r, err = Create(dir, Options{Proc: "LLAWP.exe", PID: 4242})
	if err != nil {
		t.Fatal(err)
	}
	r.Emit(Event{Op: OpConnect, Note: "two"})
	r.Close()
	path := filepath.Join(dir, FileName("LLAWP.exe", 4242))
	if filepath.Base(path) != "LLAWP.exe-4242.trace.jsonl" {
		t.Errorf("file name %s", filepath.Base(path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	evs := parseEvents(t, data)
	if len(evs) != 2 || evs[0].Note != "one" || evs[1].Note != "two" || evs[0].PID != 4242 {
		t.Errorf("events %+v", evs)
	}

	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o644)
	if _, err := Create(filepath.Join(blocker, "sub"), Options{Proc: "p"}); err == nil {
		t.Error("Create under a regular file: no error")
	}
}

func TestNilRecorder(t *testing.T) {
	var r *Recorder
	r.Emit(Event{Op: OpSend})
	if r.Hosts() != nil {
		t.Error("nil recorder has hosts")
	}
	if r.Options() != (Options{}) {
		t.Error("nil recorder has options")
	}
	if r.Err() != nil || r.Close() != nil {
		t.Error("nil recorder reports an error")
	}
}

func TestRecorderNilWriter(t *testing.T) {
	hosts, err := NewHosts(map[string][]string{"127.0.0.21": {"smps1.shared.lab"}})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRecorder(nil, Options{Proc: "smreghost", Hosts: hosts})
	r.Emit(Event{Op: OpSend})
	if r.Err() != nil || r.Close() != nil {
		t.Error("a recorder with no writer reports an error")
	}
	if got, err := r.Hosts().Resolve("smps1.shared.lab:44443"); err != nil || got != "127.0.0.21:44443" {
		t.Errorf("Resolve = %q, %v", got, err)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.11 wa1.shared.lab\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, dir, hosts, source, wantHost string
		wantFile, wantErr                  bool
	}{
		{"names the host from the source", dir, hosts, "127.0.0.11", "wa1.shared.lab", true, false},
		{"no folder records nothing but resolves", "", hosts, "127.0.0.11", "wa1.shared.lab", false, false},
		{"no hosts file", dir, "", "", "", true, false},
		{"missing hosts file", dir, filepath.Join(dir, "nope"), "", "", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Open(c.dir, c.hosts, c.source, Options{Proc: "w3wp.exe", PID: 42})
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "nope") {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			defer r.Close()
			if got := r.Options().Host; got != c.wantHost {
				t.Errorf("host %q, want %q", got, c.wantHost)
			}
			if c.hosts != "" {
				if ip, ok := r.Hosts().Lookup("wa1.shared.lab"); !ok || ip != "127.0.0.11" {
					t.Errorf("hosts map does not resolve wa1.shared.lab")
				}
			}
			_, statErr := os.Stat(filepath.Join(dir, FileName("w3wp.exe", 42)))
			if c.wantFile && statErr != nil {
				t.Errorf("no trace file: %v", statErr)
			}
		})
	}
}

// TestProcessExitTime: a Process Exit row carries the time its supervisor
// saw the exit, the same one the lab lists the death with.
func TestProcessExitTime(t *testing.T) {
	tests := []struct {
		name string
		exit *Exit
	}{
		{"wait's time", &Exit{At: time.Date(2026, 12, 3, 6, 27, 27, 877_000_000, time.UTC), Code: -1, Signal: "SIGKILL"}},
		{"no time: the recorder's", &Exit{Code: 0}},
		{"no exit status", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			rec := NewRecorder(&buf, Options{Proc: "svchost.exe", PID: 10})
			before := time.Now()
			rec.ProcessExit(Process{Name: "w3wp.exe", PID: 11, Exit: tt.exit})
			evs, err := ReadEvents("test", &buf)
			if err != nil || len(evs) != 1 {
				t.Fatalf("%d events, %v", len(evs), err)
			}
			got := evs[0].T
			if tt.exit != nil && !tt.exit.At.IsZero() {
				if !got.Equal(tt.exit.At) || !evs[0].Process.Exit.At.Equal(tt.exit.At) {
					t.Errorf("row at %v (exit at %v), want %v", got, evs[0].Process.Exit.At, tt.exit.At)
				}
			} else if got.Before(before) {
				t.Errorf("row at %v, before the call at %v", got, before)
			}
		})
	}
}
