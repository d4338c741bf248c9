package llawp

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/testsupport"
)

// vendorDate matches logging.VendorTime: "Tue Apr 18 2017 23:23:35".
const vendorDate = `[A-Z][a-z]{2} [A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2}`

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

func testACO() conf.ACO {
	aco := conf.DefaultACO()
	aco.Name = "aco.wa1"
	aco.TraceFile = true
	aco.LogAppend = false
	return aco
}

func TestSinkWritesVendorLinesWithTheWorkersPID(t *testing.T) {
	dir := t.TempDir()
	var stderr syncBuffer
	s := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp", PID: 4242, Stderr: &stderr})
	own, tr := s.Logger(), s.Tracer()
	own.Info().Msg("written before the ACO named the files")
	own.Warn().Str("server", "smps1.shared.lab:44443").Err(errors.New("connection refused")).Msg("a warning")
	own.Debug().Msg("only for our JSON")
	tr.Info().Msg("Bootstrap: host configuration object hco.smps1 received")

	aco := testACO()
	// An ACO written for Windows names a full path: only the name counts.
	aco.LogFileName = `C:\Program Files\CA\webagent\log\WA.log`
	if err := s.Open(SinkConfig{Dir: dir, ACO: aco}); err != nil {
		t.Fatal(err)
	}
	rec := ipc.LogRecord{
		Time: time.Date(2017, 4, 18, 23, 23, 35, 0, time.Local), Level: "info", PID: 1972, TID: 2856,
		Proc: "w3wp.exe", Role: "hla", Message: "IsProtected /protected/ -> YES",
		Fields: json.RawMessage(`{"realm":"protected","pid":1,"message":"not this"}`), Worker: 1,
	}
	if err := s.WriteRecord(rec); err != nil {
		t.Fatal(err)
	}
	own.Info().Msg("after open")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRecord(rec); err == nil {
		t.Error("WriteRecord after Close succeeded")
	}

	paths := s.Paths()
	if paths.AgentLog != filepath.Join(dir, "WA.log") || paths.AgentJSON != filepath.Join(dir, "WA.jsonl") ||
		paths.TraceLog != filepath.Join(dir, "WATrace.log") || paths.TraceJSON != filepath.Join(dir, "WATrace.jsonl") {
		t.Errorf("paths %+v", paths)
	}
	// The vendor's layout exactly: no level, no fields; the worker's
	// record, the oldest, first; an error ends its line.
	want := []string{
		`^\[1972/2856\]\[Tue Apr 18 2017 23:23:35\] IsProtected /protected/ -> YES$`,
		`^\[4242/\d+\]\[` + vendorDate + `\] written before the ACO named the files$`,
		`^\[4242/\d+\]\[` + vendorDate + `\] a warning: connection refused$`,
		`^\[4242/\d+\]\[` + vendorDate + `\] after open$`,
	}
	lines := readLines(t, paths.AgentLog)
	if len(lines) != len(want) {
		t.Fatalf("WA.log:\n%s", strings.Join(lines, "\n"))
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("WA.log line %d: %q does not match %s", i+1, lines[i], re)
		}
	}

	// The JSON lines have everything, the debug record too, in the same order.
	js := readLines(t, paths.AgentJSON)
	if len(js) != len(want)+1 {
		t.Fatalf("WA.jsonl has %d lines, want %d:\n%s", len(js), len(want)+1, strings.Join(js, "\n"))
	}
	var hla map[string]any
	if err := json.Unmarshal([]byte(js[0]), &hla); err != nil {
		t.Fatal(err)
	}
	if hla["pid"] != float64(1972) || hla["tid"] != float64(2856) || hla["proc"] != "w3wp.exe" || hla["role"] != "hla" ||
		hla["realm"] != "protected" || hla["message"] != "IsProtected /protected/ -> YES" || hla["level"] != "info" {
		t.Errorf("JSON record %v", hla)
	}
	if strings.Count(js[0], `"pid"`) != 1 {
		t.Errorf("the record's own pid must win over its fields': %s", js[0])
	}
	var warn map[string]any
	json.Unmarshal([]byte(js[2]), &warn)
	if warn["pid"] != float64(4242) || warn["proc"] != "LLAWP.exe" || warn["role"] != "llawp" ||
		warn["server"] != "smps1.shared.lab:44443" || warn["error"] != "connection refused" {
		t.Errorf("the LLAWP's own record %v", warn)
	}
	if !strings.Contains(js[3], `"message":"only for our JSON"`) {
		t.Errorf("WA.jsonl line 4 is %s, want the debug record", js[3])
	}

	// The trace log is ours: our layout, with level and fields.
	trace := readLines(t, paths.TraceLog)
	if len(trace) != 1 || !regexp.MustCompile(`^\[4242/\d+\]\[`+vendorDate+`\]\[INFO\] Bootstrap: host configuration object hco.smps1 received$`).MatchString(trace[0]) {
		t.Errorf("WATrace.log:\n%s", strings.Join(trace, "\n"))
	}
	// Only warnings and worse go to stderr (and on to the owner's log).
	if e := stderr.String(); strings.Count(e, "\n") != 1 || !strings.Contains(e, `"message":"a warning"`) {
		t.Errorf("stderr got %q", e)
	}
}

// TestSinkOrder writes records with known times, as the LLAWP and its
// workers would, and checks the order in which WA.log gets them: sorted
// at Open, sorted within the window after it, and a record later than the
// window written at once rather than lost.
func TestSinkOrder(t *testing.T) {
	base := time.Date(2026, 12, 2, 18, 44, 16, 0, time.Local)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	const window = time.Hour // the timer never fires: the test releases by hand
	type op struct {
		rec     int // write a record at base+rec ms (its message is the number), or
		open    int // open the sink at base+open ms, or
		release int // release what is due at base+release ms
	}
	tests := []struct {
		name string
		ops  []op
		want []string
		late uint64
	}{
		{"held until Open, then sorted",
			[]op{{rec: 30}, {rec: 10}, {rec: 20}, {open: 40}},
			[]string{"10", "20", "30"}, 0},
		{"a worker's record arriving after the LLAWP's later ones",
			[]op{{rec: 100}, {open: 150}, {rec: 200}, {rec: 120}, {release: 200 + 3600_000}},
			[]string{"100", "120", "200"}, 0},
		{"only what is due is released",
			[]op{{open: 0}, {rec: 10}, {rec: 20}, {release: 15 + 3600_000}, {rec: 5}, {rec: 17}},
			[]string{"10", "5", "17", "20"}, 1},
		{"a late record is written at once, after the later ones",
			[]op{{open: 0}, {rec: 50}, {release: 60 + 3600_000}, {rec: 40}, {rec: 70}},
			[]string{"50", "40", "70"}, 1},
		{"equal times keep their arrival order",
			[]op{{rec: 10, open: 0}, {rec: 10}, {open: 20}},
			[]string{"10", "10"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			now := base
			s := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp", PID: 4242, Window: window, Now: func() time.Time { return now }})
			for _, o := range tt.ops {
				switch {
				case o.rec != 0:
					if err := s.WriteRecord(ipc.LogRecord{Time: at(o.rec), PID: 1972, TID: 2856, Message: strconv.Itoa(o.rec)}); err != nil {
						t.Fatal(err)
					}
				case o.release != 0:
					s.mu.Lock()
					err := s.release(at(o.release))
					s.mu.Unlock()
					if err != nil {
						t.Fatal(err)
					}
				default:
					now = at(o.open)
					if err := s.Open(SinkConfig{Dir: dir, ACO: testACO()}); err != nil {
						t.Fatal(err)
					}
				}
			}
			late := s.Stats().Late
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range readLines(t, filepath.Join(dir, "WA.log")) {
				got = append(got, l[strings.LastIndexByte(l, ' ')+1:])
			}
			if !slices.Equal(got, tt.want) || late != tt.late {
				t.Errorf("WA.log has %v with %d late, want %v with %d late", got, late, tt.want, tt.late)
			}
		})
	}
}

// TestSinkWindowPasses checks that records reach the file once their
// window has passed, without waiting for Close.
func TestSinkWindowPasses(t *testing.T) {
	dir := t.TempDir()
	s := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp", Window: time.Millisecond})
	defer s.Close()
	if err := s.Open(SinkConfig{Dir: dir, ACO: testACO()}); err != nil {
		t.Fatal(err)
	}
	l := s.Logger()
	l.Info().Msg("written by the timer")
	testsupport.WaitFor(t, 10*time.Second, "the record in WA.log after its 1 ms window", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "WA.log"))
		return strings.Contains(string(b), "written by the timer")
	})
}

func TestSinkAppend(t *testing.T) {
	tests := []struct {
		append  bool
		keepOld bool
	}{{true, true}, {false, false}}
	for _, tt := range tests {
		dir := t.TempDir()
		old := "[1/1][Mon Jan 02 2006 15:04:05][INFO] from the last run\n"
		os.WriteFile(filepath.Join(dir, "WA.log"), []byte(old), 0o644)
		aco := testACO()
		aco.LogAppend = tt.append
		s := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp"})
		if err := s.Open(SinkConfig{Dir: dir, ACO: aco}); err != nil {
			t.Fatal(err)
		}
		l := s.Logger()
		l.Info().Msg("this run")
		s.Close()
		b, _ := os.ReadFile(filepath.Join(dir, "WA.log"))
		if got := strings.Contains(string(b), "from the last run"); got != tt.keepOld || !strings.Contains(string(b), "this run") {
			t.Errorf("LogAppend=%v: WA.log is %q", tt.append, b)
		}
	}
}

func TestSinkLogFileOff(t *testing.T) {
	dir := t.TempDir()
	aco := testACO()
	aco.LogFile, aco.TraceFile = false, false
	s := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp"})
	if err := s.Open(SinkConfig{Dir: dir, ACO: aco}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WriteRecord(ipc.LogRecord{Message: "x"}); err == nil {
		t.Error("a record was accepted with LogFile=NO")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files were created with the logs off: %v", entries)
	}
}

func TestSinkPendingIsBounded(t *testing.T) {
	dir := t.TempDir()
	s := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp", Pending: 2})
	l := s.Logger()
	for i := range 5 {
		l.Info().Int("i", i).Msg("early")
	}
	if err := s.Open(SinkConfig{Dir: dir, ACO: testACO()}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	lines := readLines(t, filepath.Join(dir, "WA.log"))
	js := readLines(t, filepath.Join(dir, "WA.jsonl"))
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "] early") || !strings.HasSuffix(lines[1], "] early") ||
		!strings.HasSuffix(lines[2], "] 3 log lines written before the log files were known were dropped (2 kept).") ||
		len(js) != 3 || !strings.Contains(js[0], `"i":0`) || !strings.Contains(js[1], `"i":1`) || !strings.Contains(js[2], `"level":"warn"`) {
		t.Errorf("WA.log:\n%s\nWA.jsonl:\n%s", strings.Join(lines, "\n"), strings.Join(js, "\n"))
	}
}

func TestSinkBadFolder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	s := NewSink(SinkOptions{})
	defer s.Close()
	if err := s.Open(SinkConfig{Dir: filepath.Join(file, "logs"), ACO: testACO()}); err == nil {
		t.Fatal("Open in a folder under a file succeeded")
	}
}

func TestBaseName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"WA.log", "WA.log"},
		{"/var/log/webagent/WA.log", "WA.log"},
		{`C:\Program Files\CA\webagent\log\agent.log`, "agent.log"},
		{"", "WA.log"},
		{"logs/", "WA.log"},
		{"..", "WA.log"},
	}
	for _, tt := range tests {
		if got := baseName(tt.in, "WA.log"); got != tt.want {
			t.Errorf("baseName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLogHCO(t *testing.T) {
	tests := []struct {
		name string
		host string
		hco  conf.HCO
		want []string
	}{
		{"seed", "trust_wa1", conf.DefaultHCO(), []string{
			"hostname='trust_wa1'.",
			"maxsocketsperport='20'.",
			"minsocketsperport='2'.",
			"newsocketstep='2'.",
			"requesttimeout='60'.",
		}},
		{"other values", "trust_wa2", conf.HCO{MinSocketsPerPort: 1, NewSocketStep: 3, MaxSocketsPerPort: 5, RequestTimeout: conf.Seconds(15 * time.Second)}, []string{
			"hostname='trust_wa2'.",
			"maxsocketsperport='5'.",
			"minsocketsperport='1'.",
			"newsocketstep='3'.",
			"requesttimeout='15'.",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp", PID: 1972, Level: zerolog.InfoLevel})
			if err := s.Open(SinkConfig{Dir: dir, ACO: testACO()}); err != nil {
				t.Fatal(err)
			}
			LogHCO(s.Logger(), tt.host, tt.hco)
			s.Close()
			lines := readLines(t, filepath.Join(dir, "WA.log"))
			if len(lines) != len(tt.want) {
				t.Fatalf("WA.log:\n%s", strings.Join(lines, "\n"))
			}
			prefix := regexp.MustCompile(`^\[1972/\d+\]\[` + vendorDate + `\] `)
			for i, w := range tt.want {
				loc := prefix.FindStringIndex(lines[i])
				if loc == nil || lines[i][loc[1]:] != w {
					t.Errorf("line %d: %q, want the vendor's %q after the [pid/tid][date] prefix", i+1, lines[i], w)
				}
			}
		})
	}
}
