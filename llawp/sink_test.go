package llawp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
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
	own.Warn().Str("server", "smps1.shared.lab:44443").Msg("a warning")
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
	want := []string{
		`^\[4242/\d+\]\[` + vendorDate + `\]\[INFO\] written before the ACO named the files$`,
		`^\[4242/\d+\]\[` + vendorDate + `\]\[WARN\] a warning server=smps1.shared.lab:44443$`,
		`^\[1972/2856\]\[Tue Apr 18 2017 23:23:35\]\[INFO\] IsProtected /protected/ -> YES realm=protected$`,
		`^\[4242/\d+\]\[` + vendorDate + `\]\[INFO\] after open$`,
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

	js := readLines(t, paths.AgentJSON)
	if len(js) != len(want) {
		t.Fatalf("WA.jsonl has %d lines, want %d", len(js), len(want))
	}
	var hla map[string]any
	if err := json.Unmarshal([]byte(js[2]), &hla); err != nil {
		t.Fatal(err)
	}
	if hla["pid"] != float64(1972) || hla["tid"] != float64(2856) || hla["proc"] != "w3wp.exe" || hla["role"] != "hla" ||
		hla["realm"] != "protected" || hla["message"] != "IsProtected /protected/ -> YES" || hla["level"] != "info" {
		t.Errorf("JSON record %v", hla)
	}
	if strings.Count(js[2], `"pid"`) != 1 {
		t.Errorf("the record's own pid must win over its fields': %s", js[2])
	}
	var own0 map[string]any
	json.Unmarshal([]byte(js[0]), &own0)
	if own0["pid"] != float64(4242) || own0["proc"] != "LLAWP.exe" || own0["role"] != "llawp" {
		t.Errorf("the LLAWP's own record %v", own0)
	}

	trace := readLines(t, paths.TraceLog)
	if len(trace) != 1 || !regexp.MustCompile(`^\[4242/\d+\]\[`+vendorDate+`\]\[INFO\] Bootstrap: host configuration object hco.smps1 received$`).MatchString(trace[0]) {
		t.Errorf("WATrace.log:\n%s", strings.Join(trace, "\n"))
	}
	// Only warnings and worse go to stderr (and on to the owner's log).
	if e := stderr.String(); strings.Count(e, "\n") != 1 || !strings.Contains(e, `"message":"a warning"`) {
		t.Errorf("stderr got %q", e)
	}
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
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "early i=0") || !strings.HasSuffix(lines[1], "early i=1") ||
		!strings.Contains(lines[2], "[WARN] 3 log lines written before the log files were known were dropped") {
		t.Errorf("WA.log:\n%s", strings.Join(lines, "\n"))
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
			prefix := regexp.MustCompile(`^\[1972/\d+\]\[` + vendorDate + `\]\[INFO\] `)
			for i, w := range tt.want {
				loc := prefix.FindStringIndex(lines[i])
				if loc == nil || lines[i][loc[1]:] != w {
					t.Errorf("line %d: %q, want the vendor's %q after the [pid/tid][date][LEVEL] prefix", i+1, lines[i], w)
				}
			}
		})
	}
}
