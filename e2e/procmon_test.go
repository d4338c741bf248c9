package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/trace"
)

// usageExit is the exit code of a flag the parser refuses (kong's).
const usageExit = 2

// procmonRow is one row of a printed Process Monitor view.
type procmonRow struct {
	proc, pid, op, path, result, detail string
}

var cellSep = regexp.MustCompile(`\s{2,}`)

// procmonRows reads the rows of a printed view: the header, then one row
// a line until a line that is not one (its cells are apart by two spaces
// or more, and none holds two spaces).
func procmonRows(t *testing.T, out string) []procmonRow {
	t.Helper()
	i := strings.Index(out, "Time of Day ")
	if i < 0 {
		t.Fatalf("no Process Monitor view:\n%s", out)
	}
	lines := strings.Split(out[i:], "\n")
	if got := cellSep.Split(strings.TrimSpace(lines[0]), -1); strings.Join(got, "|") != "Time of Day|Process Name|PID|Operation|Path|Result|Detail" {
		t.Fatalf("header %q", got)
	}
	// The columns start where the header's do (the table is aligned): a
	// cell may be empty, as a Process Exit's Path is.
	var starts []int
	for _, name := range []string{"Time of Day", "Process Name", "PID", "Operation", "Path", "Result", "Detail"} {
		starts = append(starts, strings.Index(lines[0], name))
	}
	cell := func(l string, k int) string {
		from, to := starts[k], len(l)
		if k+1 < len(starts) {
			to = min(starts[k+1], len(l))
		}
		if from >= len(l) {
			return ""
		}
		return strings.TrimSpace(l[from:to])
	}
	var rows []procmonRow
	for _, l := range lines[1:] {
		if len(l) < starts[6] || cell(l, 0) == "" || !strings.Contains(cell(l, 0), ":") {
			break
		}
		rows = append(rows, procmonRow{cell(l, 1), cell(l, 2), cell(l, 3), cell(l, 4), cell(l, 5), cell(l, 6)})
	}
	return rows
}

// TestProcmonView runs the seed lab with a Process Monitor filter, then
// renders its trace.jsonl with agentlab procmon through each filter: the
// rows are the trace's socket events that the filter keeps, with Process
// Monitor's operation names (a reset is a TCP Disconnect), Result and
// Detail.
func TestProcmonView(t *testing.T) {
	labFile, _ := seedLab(t)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--requests", "4", "--poll", "1s",
		"--include", "Process Name is LLAWP.exe", "--include", "Operation is TCP Connect", "--include", "Operation is TCP Disconnect")
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	tracePath := filepath.Join(out, "trace.jsonl")
	evs, err := trace.ReadFile(tracePath)
	if err != nil {
		t.Fatal(err)
	}
	count := func(f func(e trace.Event) bool) int {
		n := 0
		for _, e := range evs {
			if procmon.Ops(e) && f(e) {
				n++
			}
		}
		return n
	}

	// The run's own view: the seed's filter, then LLAWP.exe's connects
	// and disconnects: its bootstrap connection reset, its two to smps1.
	if !strings.Contains(r.stdout, "Process Monitor view (filtered as the seed filters: wa1.shared.lab to smps1.shared.lab or smps2.shared.lab; "+
		"then include Process Name is LLAWP.exe; include Operation is TCP Connect; include Operation is TCP Disconnect):") {
		t.Errorf("the view's title does not say its filters:\n%s", r.stdout)
	}
	rows := procmonRows(t, r.stdout)
	want := count(func(e trace.Event) bool {
		return e.Proc == "LLAWP.exe" && e.LocalHost == "wa1.shared.lab" && strings.HasPrefix(e.RemoteHost, "smps") &&
			(e.Op == trace.OpConnect || e.Op == trace.OpDisconnect || e.Op == trace.OpReset)
	})
	if len(rows) != want || want < 5 {
		t.Errorf("agentlab run printed %d rows, want LLAWP.exe's %d connects and disconnects", len(rows), want)
	}
	resets := 0
	for _, row := range rows {
		if row.proc != "LLAWP.exe" || row.op != "TCP Connect" && row.op != "TCP Disconnect" || row.result != "SUCCESS" {
			t.Errorf("row %+v", row)
		}
		if strings.Contains(row.detail, "reset: RST sent") {
			resets++
			if row.op != "TCP Disconnect" || !strings.Contains(row.path, "-> smps2.shared.lab:44443") {
				t.Errorf("the bootstrap reset is %+v", row)
			}
		}
		if row.op == "TCP Connect" && !regexp.MustCompile(`^Length: 0, mss: \d+, sackopt: 1, tsopt: 1, wsopt: 1, (rcvwin: \d+, )?rcvwinscale: \d+, sndwinscale: \d+, seqnum: 0$`).MatchString(row.detail) {
			t.Errorf("a connect's Detail: %q", row.detail)
		}
	}
	if resets != 1 {
		t.Errorf("%d resets of LLAWP.exe, want its bootstrap's", resets)
	}
	page, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if n := regexp.MustCompile(`<tr class="op-[a-z]+">`).FindAll(page, -1); len(n) != len(rows) {
		t.Errorf("report.html has %d rows, agentlab run printed %d", len(n), len(rows))
	}

	// agentlab procmon: every process's socket and process events, then
	// each filter.
	for _, tc := range []struct {
		name    string
		args    []string
		keep    func(e trace.Event) bool
		row     func(r procmonRow) bool
		atLeast int
	}{
		{"no filter", nil, func(trace.Event) bool { return true }, func(procmonRow) bool { return true }, 50},
		{"Process Name is w3wp.exe", []string{"--include", "Process Name is w3wp.exe"},
			func(e trace.Event) bool { return e.Proc == "w3wp.exe" },
			func(r procmonRow) bool { return r.proc == "w3wp.exe" }, 10},
		{"Operation is TCP Connect", []string{"--include", "operation is tcp connect"},
			func(e trace.Event) bool { return e.Op == trace.OpConnect },
			func(r procmonRow) bool { return r.op == "TCP Connect" }, 6},
		{"Path contains smps2", []string{"--include", "Path contains smps2.shared.lab"},
			func(e trace.Event) bool {
				return e.RemoteHost == "smps2.shared.lab" || e.LocalHost == "smps2.shared.lab"
			},
			func(r procmonRow) bool { return strings.Contains(r.path, "smps2.shared.lab") }, 10},
		{"resets, by their Detail", []string{"--include", "Detail contains reset"},
			func(e trace.Event) bool { return e.Op == trace.OpReset },
			func(r procmonRow) bool { return r.op == "TCP Disconnect" && strings.Contains(r.detail, "reset: RST") }, 4},
		{"two processes' disconnects: OR on a column, AND across", []string{"--include", "Process Name is w3wp.exe",
			"--include", "Process Name is LLAWP.exe", "--include", "Operation is TCP Disconnect"},
			func(e trace.Event) bool {
				return (e.Proc == "w3wp.exe" || e.Proc == "LLAWP.exe") && (e.Op == trace.OpDisconnect || e.Op == trace.OpReset)
			},
			func(r procmonRow) bool {
				return (r.proc == "w3wp.exe" || r.proc == "LLAWP.exe") && r.op == "TCP Disconnect"
			}, 6},
		{"excludes", []string{"--exclude", "Operation is TCP Send", "--exclude", "Operation is TCP Receive", "--exclude", "Process Name begins with smps"},
			func(e trace.Event) bool { return e.Op != trace.OpSend && e.Op != trace.OpReceive && e.Proc != "smps" },
			func(r procmonRow) bool { return r.op != "TCP Send" && r.op != "TCP Receive" && r.proc != "smps" }, 10},
		{"an exclude over an include", []string{"--include", "Process Name is w3wp.exe", "--exclude", "Path excludes smps1"},
			func(e trace.Event) bool { return e.Proc == "w3wp.exe" && e.RemoteHost == "smps1.shared.lab" },
			func(r procmonRow) bool { return r.proc == "w3wp.exe" && strings.Contains(r.path, "smps1") }, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runCmd(t, nil, "agentlab", append([]string{"procmon", tracePath}, tc.args...)...)
			if res.code != 0 {
				t.Fatalf("agentlab procmon: exit %d\n%s", res.code, res.stderr)
			}
			rows := procmonRows(t, res.stdout)
			if want := count(tc.keep); len(rows) != want || want < tc.atLeast {
				t.Errorf("%d rows, want the trace's %d (at least %d)", len(rows), want, tc.atLeast)
			}
			for _, row := range rows {
				if !tc.row(row) || row.result != "SUCCESS" || strings.HasPrefix(row.op, "TCP ") != strings.HasPrefix(row.detail, "Length: ") {
					t.Errorf("row %+v", row)
				}
			}
		})
	}

	// A trace without host names is named by the hosts file next to it.
	bare := t.TempDir()
	var b bytes.Buffer
	toSmps2 := count(func(e trace.Event) bool {
		return e.RemoteHost == "smps2.shared.lab" || e.LocalHost == "smps2.shared.lab"
	})
	for i := range evs {
		evs[i].LocalHost, evs[i].RemoteHost = "", ""
	}
	if err := trace.WriteEvents(&b, evs); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bare, "trace.jsonl"), b.Bytes(), 0o644)
	res := runCmd(t, nil, "agentlab", "procmon", filepath.Join(bare, "trace.jsonl"), "--include", "Path contains smps2.shared.lab")
	if res.code != 0 || len(procmonRows(t, res.stdout)) != 0 {
		t.Errorf("without a hosts file: exit %d, %d rows naming smps2.shared.lab", res.code, len(procmonRows(t, res.stdout)))
	}
	hosts, _ := os.ReadFile(filepath.Join(out, "hosts"))
	os.WriteFile(filepath.Join(bare, "hosts"), hosts, 0o644)
	res = runCmd(t, nil, "agentlab", "procmon", filepath.Join(bare, "trace.jsonl"), "--include", "Path contains smps2.shared.lab")
	if n := len(procmonRows(t, res.stdout)); res.code != 0 || n != toSmps2 {
		t.Errorf("with the hosts file next to it: exit %d, %d rows naming smps2.shared.lab, want %d", res.code, n, toSmps2)
	}

	// A filter that does not parse is a usage error that says why.
	for _, tc := range []struct{ arg, msg string }{
		{"Process is w3wp.exe", `--include: "Process is w3wp.exe": want a column first, one of Time of Day, Process Name, PID, Operation, Path, Result, Detail`},
		{"Operation is TCP Reset", `Process Monitor has no operation "TCP Reset"`},
		{"Process Name matches w3wp", `want a relation after "Process Name"`},
		{"Path contains", `no value after "Path contains"`},
	} {
		res := runCmd(t, nil, "agentlab", "procmon", tracePath, "--include", tc.arg)
		if res.code != usageExit || !strings.Contains(res.stderr, tc.msg) {
			t.Errorf("--include %q: exit %d, want %d and %q:\n%s", tc.arg, res.code, usageExit, tc.msg, res.stderr)
		}
	}
	res = runCmd(t, nil, "agentlab", "run", labFile, "--out", t.TempDir(), "--bin", binDir, "--exclude", "PID is w3wp.exe")
	if res.code != usageExit || !strings.Contains(res.stderr, `a PID is a number, not "w3wp.exe"`) {
		t.Errorf("agentlab run --exclude 'PID is w3wp.exe': exit %d:\n%s", res.code, res.stderr)
	}
}
