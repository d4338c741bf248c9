package lab

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/trace"
)

// pageText is a page's text without its tags, as a reader sees it.
func pageText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return html.UnescapeString(regexp.MustCompile(`<[^>]+>`).ReplaceAllString(string(b), ""))
}

// TestWriteReport: a run's report.html says what the run was and how it
// went, from its summary, and reads the trace with the text report's
// filters.
func TestWriteReport(t *testing.T) {
	evs := newEvb().startup("w3wp.exe", 100, "hla").startup("LLAWP.exe", 101, "llawp").
		add("smreghost", 99, "smreghost", trace.OpConnect, "99-1", ps2, trace.PhaseAdmin, "").evs
	for _, tc := range []struct {
		name string
		sum  Summary
		all  bool
		want []string
		not  []string
	}{
		{name: "iis", sum: summaryOf("iis", "", 0, 0),
			want: []string{"agentlab run: lab seed, IIS", "one w3wp.exe and its LLAWP.exe", "200 page loads sent by 1 browser: 200 succeeded, 0 failed",
				"filtered as the seed filters: wa1.shared.lab to smps1.shared.lab or smps2.shared.lab", "Step 1: w3wp.exe (pid 100)"},
			not: []string{"The run failed", "smreghost (99)"}},
		{name: "apache recycling", sum: summaryOf("apache", "", 3, 5),
			want: []string{"agentlab run: lab seed, Apache prefork", "prefork MPM: an httpd parent, 3 httpd children",
				"a child is replaced after 5 requests"}},
		{name: "failed, every process", sum: func() Summary {
			s := summaryOf("apache", "worker", 2, 0)
			s.Error = "web server wa1.shared.lab: no answer"
			return s
		}(), all: true,
			want: []string{"Apache worker", "The run failed: web server wa1.shared.lab: no answer", "rows (every process)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Seed()
			if err != nil {
				t.Fatal(err)
			}
			r := &Run{Lab: l, Opts: Options{Out: t.TempDir(), All: tc.all}, summary: tc.sum}
			r.summary.Lab, r.summary.Settings.Concurrency = l.Name, 1
			r.summary.Settings.WebServer = l.WebServer.Host
			if err := r.writeReport(evs); err != nil {
				t.Fatal(err)
			}
			if r.ReportPath() != filepath.Join(r.Opts.Out, ReportFile) {
				t.Errorf("ReportPath %q", r.ReportPath())
			}
			text := pageText(t, r.ReportPath())
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("report.html does not say %q", w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(text, w) {
					t.Errorf("report.html says %q", w)
				}
			}
		})
	}
	if p := (&Run{Opts: Options{Out: t.TempDir()}}).ReportPath(); p != "" {
		t.Errorf("a run that wrote no report has ReportPath %q", p)
	}
}

// TestWriteCompareReport: one page, each run beside the others, with the
// figures table.
func TestWriteCompareReport(t *testing.T) {
	l, err := Seed()
	if err != nil {
		t.Fatal(err)
	}
	var runs []CompareRun
	for _, s := range compareSpecs {
		b := newEvb().startup("w3wp.exe", 100, "hla")
		sum := summaryOf(s.model, s.mpm, 3, 0)
		r := &Run{Lab: l, summary: sum}
		name := RunName(sum.Settings)
		runs = append(runs, CompareRun{Figures: ComputeFigures(b.evs, sum), side: r.reportSide(name, b.evs, r.compareLines())})
	}
	o := CompareOptions{Out: filepath.Join(t.TempDir(), "compare"), Workers: 3}
	path, err := WriteCompareReport(l, o, runs)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(o.Out, ReportFile) {
		t.Errorf("path %q", path)
	}
	text := pageText(t, path)
	for _, w := range []string{"agentlab compare: lab seed", "as IIS, Apache prefork and Apache worker", "Apache with 3 children, no recycling",
		"handshakes completed", "IIS: 4 rows", "Apache prefork: 4 rows", "Apache worker: 4 rows"} {
		if !strings.Contains(text, w) {
			t.Errorf("compare report.html does not say %q", w)
		}
	}
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), `<svg class="seq"`); n != 3 {
		t.Errorf("%d diagrams, want one per run", n)
	}
}

// TestLLAWPStatusFile: a run's llawp-status.json is its own: a new run
// clears the previous one's, and the report lists the file only when the
// run wrote it.
func TestLLAWPStatusFile(t *testing.T) {
	evs := newEvb().startup("w3wp.exe", 100, "hla").startup("LLAWP.exe", 101, "llawp").evs
	for _, tc := range []struct {
		name string
		code int
		want bool
	}{
		{"fetched", http.StatusOK, true},
		{"not fetched", http.StatusServiceUnavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				io.WriteString(w, `{"proc": "w3wp.exe", "pid": 100, "llawp": {"pid": 101, "phase": "requests"}}`)
			}))
			defer srv.Close()
			out := t.TempDir()
			stale := filepath.Join(out, LLAWPStatusFile)
			if err := os.WriteFile(stale, []byte(`{"proc": "from the previous run"}`), 0o644); err != nil {
				t.Fatal(err)
			}
			keep := filepath.Join(out, "notes.txt")
			os.WriteFile(keep, nil, 0o644)
			if _, err := clearPreviousRun(out); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(keep); err != nil {
				t.Errorf("a file that is no run's was removed: %v", err)
			}
			l, err := Seed()
			if err != nil {
				t.Fatal(err)
			}
			r := &Run{Lab: l, Opts: Options{Out: out}}
			r.summary.WebServerURL = srv.URL + "/"
			if err := r.fetchLLAWPStatus(context.Background()); (err == nil) != tc.want {
				t.Errorf("fetchLLAWPStatus: %v", err)
			}
			_, err = os.Stat(stale)
			if exists := err == nil; exists != tc.want {
				t.Errorf("%s exists: %v, want %v", LLAWPStatusFile, exists, tc.want)
			}
			var b strings.Builder
			r.Report(&b, evs, false)
			line := regexp.MustCompile(`Everything is in .*`).FindString(b.String())
			if line == "" {
				t.Fatalf("no list of files:\n%s", b.String())
			}
			if listed := strings.Contains(line, LLAWPStatusFile); listed != tc.want {
				t.Errorf("the report lists %s: %v, want %v: %q", LLAWPStatusFile, listed, tc.want, line)
			}
		})
	}
}

// TestReportProcmonFilter: agentlab run --include and --exclude narrow the
// printed Process Monitor view and report.html's alike, after the seed's
// filter (or --all), and both titles say so.
func TestReportProcmonFilter(t *testing.T) {
	evs := newEvb().startup("w3wp.exe", 100, "hla").startup("LLAWP.exe", 101, "llawp").
		add("smreghost", 99, "smreghost", trace.OpConnect, "99-1", ps2, trace.PhaseAdmin, "").evs
	cond := func(s string) procmon.Condition {
		c, err := procmon.ParseCondition(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		all   bool
		f     procmon.Filter
		title string
		procs []string // the Process Name of each row
	}{
		{"the seed's view", false, procmon.Filter{}, "filtered as the seed filters: wa1.shared.lab to smps1.shared.lab or smps2.shared.lab",
			[]string{"w3wp.exe", "w3wp.exe", "w3wp.exe", "w3wp.exe", "LLAWP.exe", "LLAWP.exe", "LLAWP.exe", "LLAWP.exe", "smreghost"}},
		{"LLAWP.exe's connects", false, procmon.Filter{Include: []procmon.Condition{cond("Process Name is LLAWP.exe"), cond("Operation is TCP Connect")}},
			"filtered as the seed filters: wa1.shared.lab to smps1.shared.lab or smps2.shared.lab; then include Process Name is LLAWP.exe; include Operation is TCP Connect",
			[]string{"LLAWP.exe", "LLAWP.exe", "LLAWP.exe"}},
		{"every process but the agents' resets", true, procmon.Filter{Exclude: []procmon.Condition{cond("Detail contains reset")}},
			"every process; then exclude Detail contains reset",
			[]string{"w3wp.exe", "w3wp.exe", "w3wp.exe", "LLAWP.exe", "LLAWP.exe", "LLAWP.exe", "smreghost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Seed()
			if err != nil {
				t.Fatal(err)
			}
			r := &Run{Lab: l, Opts: Options{Out: t.TempDir(), All: tc.all, Procmon: tc.f}, summary: summaryOf("iis", "", 0, 0)}
			var b strings.Builder
			r.Report(&b, evs, tc.all)
			text := b.String()
			if !strings.Contains(text, "Process Monitor view ("+tc.title+"):") {
				t.Errorf("title is not %q:\n%s", tc.title, text)
			}
			table := text[strings.Index(text, "Time of Day"):strings.Index(text, "What happened")]
			var procs []string
			for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
				procs = append(procs, strings.Fields(line)[1])
			}
			if strings.Join(procs, " ") != strings.Join(tc.procs, " ") {
				t.Errorf("rows of %q, want %q:\n%s", procs, tc.procs, table)
			}
			if err := r.writeReport(evs); err != nil {
				t.Fatal(err)
			}
			page := pageText(t, r.ReportPath())
			if !strings.Contains(page, fmt.Sprintf("%d rows (%s)", len(tc.procs), tc.title)) {
				t.Errorf("report.html's table is not titled %d rows (%s)", len(tc.procs), tc.title)
			}
		})
	}
}
