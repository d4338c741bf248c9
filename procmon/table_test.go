package procmon

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
	"github.com/agentlab/agentlab/trace/tracetest"
)

// tableLines renders evs with WriteTable and returns its rows, each with
// its runs of spaces made one, the header first.
func tableLines(t *testing.T, evs []trace.Event, keep Select, f Filter) []string {
	t.Helper()
	var b bytes.Buffer
	if _, err := WriteTable(&b, evs, keep, f, 0); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return lines
}

// TestProcmonRows: each operation as Process Monitor shows it: its name
// (a reset is a TCP Disconnect that says so in Detail), its Result and
// its Detail, with the relative sequence numbers of the bytes.
func TestProcmonRows(t *testing.T) {
	at := time.Date(2017, 4, 18, 23, 23, 35, 123456789, time.Local)
	tcp := &trace.TCPInfo{MSS: 65483, SACK: true, Timestamps: true, WindowScaling: true, RcvWindow: 65536, RcvWindowScale: 7, SndWindowScale: 10}
	c, s := tracetest.Ends(1, 50134)
	ev := func(e trace.Event, op string, n int, note string) trace.Event {
		e.T, e.Op, e.Len, e.Note = at, op, n, note
		return e
	}
	with := func(e trace.Event, f func(*trace.Event)) trace.Event { f(&e); return e }
	peer := func(e trace.Event, op string) trace.Event {
		p := tracetest.PeerClose(op)
		return with(ev(e, op, 0, p.Note), func(e *trace.Event) { e.Peer = p.Peer })
	}
	failed := trace.Event{T: at, Proc: "w3wp.exe", PID: 100, Op: trace.OpConnect, Remote: "127.0.0.22:44443", LocalHost: "wa1.shared.lab",
		RemoteHost: "smps2.shared.lab", Note: "failed: connect: connection refused", Error: "connection refused", Errno: "ECONNREFUSED"}
	path := "wa1.shared.lab:50134 -> smps1.shared.lab:44443"
	srvPath := "smps1.shared.lab:44443 -> wa1.shared.lab:50134"
	for _, tc := range []struct {
		name string
		evs  []trace.Event
		want []string // the last event's row
	}{
		{"connect with the system's TCP_INFO", []trace.Event{with(ev(c, trace.OpConnect, 0, ""), func(e *trace.Event) { e.TCP = tcp })},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Connect", path, "SUCCESS",
				"Length: 0, mss: 65483, sackopt: 1, tsopt: 1, wsopt: 1, rcvwin: 65536, rcvwinscale: 7, sndwinscale: 10, seqnum: 0"}},
		{"connect without it, nor a receive window", []trace.Event{with(ev(c, trace.OpConnect, 0, ""), func(e *trace.Event) { e.TCP = &trace.TCPInfo{MSS: 536} })},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Connect", path, "SUCCESS",
				"Length: 0, mss: 536, sackopt: 0, tsopt: 0, wsopt: 0, rcvwinscale: 0, sndwinscale: 0, seqnum: 0"}},
		{"a trace without TCP_INFO", []trace.Event{ev(s, trace.OpAccept, 0, "")},
			[]string{"23:23:35.1234567", "smps", "200", "TCP Accept", srvPath, "SUCCESS", "Length: 0, seqnum: 0"}},
		{"first send", []trace.Event{ev(c, trace.OpConnect, 0, ""), ev(c, trace.OpSend, 70, "")},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Send", path, "SUCCESS", "Length: 70, seqnum: 1"}},
		{"sends and receives count their own directions", []trace.Event{ev(c, trace.OpConnect, 0, ""), ev(c, trace.OpSend, 70, ""),
			ev(c, trace.OpReceive, 77, ""), ev(c, trace.OpSend, 55, ""), ev(c, trace.OpReceive, 78, "")},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Receive", path, "SUCCESS", "Length: 78, seqnum: 78"}},
		{"the bootstrap reset: a TCP Disconnect", []trace.Event{ev(c, trace.OpConnect, 0, ""), ev(c, trace.OpSend, 70, ""), ev(c, trace.OpSend, 55, ""),
			ev(c, trace.OpReset, 0, "")},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Disconnect", path, "SUCCESS", "Length: 0, seqnum: 126, reset: RST sent"}},
		{"the server sees the reset", []trace.Event{ev(s, trace.OpAccept, 0, ""), ev(s, trace.OpReceive, 125, ""), ev(s, trace.OpSend, 9, ""),
			peer(s, trace.OpReset)},
			[]string{"23:23:35.1234567", "smps", "200", "TCP Disconnect", srvPath, "SUCCESS", "Length: 0, seqnum: 126, reset: RST received"}},
		{"a close", []trace.Event{ev(c, trace.OpConnect, 0, ""), ev(c, trace.OpSend, 10, ""), ev(c, trace.OpReceive, 20, ""), ev(c, trace.OpDisconnect, 0, "")},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Disconnect", path, "SUCCESS", "Length: 0, seqnum: 11"}},
		{"the peer's close", []trace.Event{ev(c, trace.OpConnect, 0, ""), ev(c, trace.OpSend, 10, ""), ev(c, trace.OpReceive, 20, ""),
			peer(c, trace.OpDisconnect)},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Disconnect", path, "SUCCESS", "Length: 0, seqnum: 21, closed by peer: FIN received"}},
		{"a reset that could not be: a plain close", []trace.Event{ev(c, trace.OpConnect, 0, ""), ev(c, trace.OpDisconnect, 0, "reset not supported: closed")},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Disconnect", path, "SUCCESS", "Length: 0, seqnum: 1"}},
		{"a refused connect", []trace.Event{failed},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Connect", "wa1.shared.lab -> smps2.shared.lab:44443", "CONNECTION REFUSED", "Length: 0"}},
		{"a connect that timed out", []trace.Event{with(failed, func(e *trace.Event) { e.Errno = "ETIMEDOUT" })},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Connect", "wa1.shared.lab -> smps2.shared.lab:44443", "IO TIMEOUT", "Length: 0"}},
		{"a connect that failed otherwise, or in an old trace", []trace.Event{with(failed, func(e *trace.Event) { e.Errno = "" })},
			[]string{"23:23:35.1234567", "w3wp.exe", "100", "TCP Connect", "wa1.shared.lab -> smps2.shared.lab:44443", "UNSUCCESSFUL", "Length: 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := Rows(tc.evs, nil, Filter{})
			if len(rows) != len(tc.evs) {
				t.Fatalf("%d rows for %d events", len(rows), len(tc.evs))
			}
			got := rows[len(rows)-1].Cells
			if strings.Join(got, " | ") != strings.Join(tc.want, " | ") {
				t.Errorf("row\n got %s\nwant %s", strings.Join(got, " | "), strings.Join(tc.want, " | "))
			}
			lines := tableLines(t, tc.evs, nil, Filter{})
			if lines[0] != "Time of Day Process Name PID Operation Path Result Detail" {
				t.Errorf("header %q", lines[0])
			}
			if last := lines[len(lines)-1]; last != strings.Join(strings.Fields(strings.Join(tc.want, " ")), " ") {
				t.Errorf("text row %q", last)
			}
		})
	}
}

func TestParseProcmonCondition(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Condition
		err  string
	}{
		{in: "Process Name is w3wp.exe", want: Condition{ColProcessName, RelIs, "w3wp.exe"}},
		{in: "  process name IS   LLAWP.exe  ", want: Condition{ColProcessName, RelIs, "LLAWP.exe"}},
		{in: "Operation is tcp connect", want: Condition{ColOperation, RelIs, "TCP Connect"}},
		{in: "Operation is not TCP Send", want: Condition{ColOperation, RelIsNot, "TCP Send"}},
		{in: "Operation begins with TCP", want: Condition{ColOperation, RelBeginsWith, "TCP"}},
		{in: "Path contains smps2.shared.lab:44443", want: Condition{ColPath, RelContains, "smps2.shared.lab:44443"}},
		{in: "Path is notes", want: Condition{ColPath, RelIs, "notes"}},
		{in: "Path ends with :44443", want: Condition{ColPath, RelEndsWith, ":44443"}},
		{in: "Detail excludes reset", want: Condition{ColDetail, RelExcludes, "reset"}},
		{in: "Detail contains Length: 0, seqnum: 1", want: Condition{ColDetail, RelContains, "Length: 0, seqnum: 1"}},
		{in: "Result is not SUCCESS", want: Condition{ColResult, RelIsNot, "SUCCESS"}},
		{in: "PID is 4242", want: Condition{ColPID, RelIs, "4242"}},
		{in: "PID begins with 42", want: Condition{ColPID, RelBeginsWith, "42"}},
		{in: "Time of Day begins with 23:23:35", want: Condition{ColTimeOfDay, RelBeginsWith, "23:23:35"}},
		{in: "", err: `empty filter: want "COLUMN RELATION VALUE"`},
		{in: "Process is w3wp.exe", err: `"Process is w3wp.exe": want a column first, one of Time of Day, Process Name, PID`},
		{in: "Process Namely is x", err: "want a column first"},
		{in: "Process Name matches w3wp", err: `want a relation after "Process Name", one of is not, is, begins with`},
		{in: "Process Name isw3wp.exe", err: "want a relation after"},
		{in: "Process Name is", err: `"Process Name is": no value after "Process Name is"`},
		{in: "Process Name is not   ", err: `no value after "Process Name is not"`},
		{in: "Operation is TCP Reset", err: `Process Monitor has no operation "TCP Reset" (a connection closed by a reset is a TCP Disconnect whose Detail says "reset"`},
		{in: "Operation is not Handshake", err: `no operation "Handshake"; its network and process operations are TCP Connect, TCP Accept`},
		{in: "Operation is process create", want: Condition{ColOperation, RelIs, "Process Create"}},
		{in: "Operation is not Process Exit", want: Condition{ColOperation, RelIsNot, "Process Exit"}},
		{in: "PID is w3wp.exe", err: `a PID is a number, not "w3wp.exe"`},
		{in: "PID is -1", err: "a PID is a number"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCondition(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
			var u Condition
			if err := u.UnmarshalText([]byte(tc.in)); err != nil || u != got {
				t.Errorf("UnmarshalText: %+v, %v", u, err)
			}
		})
	}
}

// TestProcmonFilter: conditions combine as Process Monitor combines them:
// an Exclude that matches drops the row; Include conditions on one column
// are OR-ed, on different columns AND-ed.
func TestProcmonFilter(t *testing.T) {
	row := func(proc, op, path, detail string) []string {
		return []string{"23:23:35.0000000", proc, "100", op, path, ResultSuccess, detail}
	}
	rows := map[string][]string{
		"w3wp connect":   row("w3wp.exe", "TCP Connect", "wa1.shared.lab:50134 -> smps2.shared.lab:44443", "Length: 0, seqnum: 0"),
		"w3wp send":      row("w3wp.exe", "TCP Send", "wa1.shared.lab:50134 -> smps2.shared.lab:44443", "Length: 70, seqnum: 1"),
		"w3wp reset":     row("w3wp.exe", "TCP Disconnect", "wa1.shared.lab:50134 -> smps2.shared.lab:44443", "Length: 0, seqnum: 126, reset: RST sent"),
		"llawp connect":  row("LLAWP.exe", "TCP Connect", "wa1.shared.lab:50137 -> smps1.shared.lab:44443", "Length: 0, seqnum: 0"),
		"llawp send":     row("LLAWP.exe", "TCP Send", "wa1.shared.lab:50137 -> smps1.shared.lab:44443", "Length: 51, seqnum: 300"),
		"smps accept":    row("smps", "TCP Accept", "smps2.shared.lab:44443 -> wa1.shared.lab:50134", "Length: 0, seqnum: 0"),
		"smreghost send": row("smreghost", "TCP Send", "wa1.shared.lab:50100 -> smps2.shared.lab:44443", "Length: 72, seqnum: 1"),
	}
	cond := func(s string) Condition {
		c, err := ParseCondition(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	conds := func(ss ...string) []Condition {
		var cs []Condition
		for _, s := range ss {
			cs = append(cs, cond(s))
		}
		return cs
	}
	for _, tc := range []struct {
		name             string
		include, exclude []string
		want             []string
	}{
		{"no condition keeps all", nil, nil,
			[]string{"llawp connect", "llawp send", "smps accept", "smreghost send", "w3wp connect", "w3wp reset", "w3wp send"}},
		{"Process Name is w3wp.exe", []string{"Process Name is w3wp.exe"}, nil, []string{"w3wp connect", "w3wp reset", "w3wp send"}},
		{"one column: OR", []string{"Process Name is w3wp.exe", "Process Name is LLAWP.exe"}, nil,
			[]string{"llawp connect", "llawp send", "w3wp connect", "w3wp reset", "w3wp send"}},
		{"two columns: AND", []string{"Process Name is w3wp.exe", "Operation is TCP Connect"}, nil, []string{"w3wp connect"}},
		{"OR within, AND across", []string{"Process Name is w3wp.exe", "Process Name is LLAWP.exe", "Operation is TCP Connect", "Operation is TCP Disconnect"}, nil,
			[]string{"llawp connect", "w3wp connect", "w3wp reset"}},
		{"Path contains", []string{"Path contains smps2.shared.lab"}, nil, []string{"smps accept", "smreghost send", "w3wp connect", "w3wp reset", "w3wp send"}},
		{"an exclude alone", nil, []string{"Operation is TCP Send"}, []string{"llawp connect", "smps accept", "w3wp connect", "w3wp reset"}},
		{"excludes are each enough", nil, []string{"Operation is TCP Send", "Process Name is smps"}, []string{"llawp connect", "w3wp connect", "w3wp reset"}},
		{"an exclude wins over an include", []string{"Process Name is w3wp.exe"}, []string{"Detail contains reset"}, []string{"w3wp connect", "w3wp send"}},
		{"is not, begins with or ends with, excludes", []string{"Process Name is not smps", "Path begins with wa1.shared.lab:5013",
			"Path ends with :44443", "Detail excludes seqnum: 0"}, nil, []string{"llawp send", "smreghost send", "w3wp reset", "w3wp send"}},
		{"an exclude with excludes keeps what contains", nil, []string{"Detail excludes reset"}, []string{"w3wp reset"}},
		{"an include nothing matches", []string{"Operation is TCP Reconnect"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Filter{Include: conds(tc.include...), Exclude: conds(tc.exclude...)}
			var got []string
			for _, name := range []string{"llawp connect", "llawp send", "smps accept", "smreghost send", "w3wp connect", "w3wp reset", "w3wp send"} {
				if f.Keep(rows[name]) {
					got = append(got, name)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("kept %q, want %q", got, tc.want)
			}
		})
	}
	f := Filter{Include: conds("Process Name is w3wp.exe"), Exclude: conds("Operation is TCP Send")}
	if s := f.String(); s != "include Process Name is w3wp.exe; exclude Operation is TCP Send" {
		t.Errorf("String %q", s)
	}
}

// TestWriteTableFilters: the seed's filter selects the events, the
// Process Monitor filter the rows, and the sequence numbers come from
// every event of the connection, shown or not.
func TestWriteTableFilters(t *testing.T) {
	evs := tracetest.IIS()
	seed := All(SocketOps, Between("wa1.shared.lab", tracetest.Servers...))
	all := tableLines(t, evs, seed, Filter{})
	cond := func(s string) Condition {
		c, err := ParseCondition(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	resets := tableLines(t, evs, seed, Filter{Include: []Condition{cond("Detail contains reset")}})
	if len(resets) != 3 { // the header, w3wp.exe's and LLAWP.exe's bootstrap
		t.Fatalf("resets:\n%s", strings.Join(resets, "\n"))
	}
	for _, r := range resets[1:] {
		if !slices.Contains(all, r) || !strings.Contains(r, "TCP Disconnect") || !strings.Contains(r, "smps2.shared.lab:44443") {
			t.Errorf("reset row %q is not the unfiltered view's TCP Disconnect to smps2", r)
		}
	}
	var b bytes.Buffer
	n, err := WriteTable(&b, evs, seed, Filter{}, 5)
	if err != nil || n != len(all)-1 || strings.Count(b.String(), "\n") != 6 {
		t.Errorf("limit 5: %d rows (%v), want %d, and 5 printed:\n%s", n, err, len(all)-1, b.String())
	}
}

// FuzzParseProcmonCondition: the parser never panics, and what it accepts
// reads back the same from its String.
func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"Process Name is w3wp.exe", "Operation is not TCP Send", "Path contains smps2", "PID is 42",
		"Detail excludes reset", "Time of Day begins with 23:", "Result ends with ED", "Operation is TCP Reset", "", "PID is"} {
		f.Add(s)
	}
	row := []string{"23:23:35.0000000", "w3wp.exe", "100", "TCP Send", "wa1.shared.lab:50134 -> smps2.shared.lab:44443", ResultSuccess, "Length: 70, seqnum: 1"}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCondition(s)
		if err != nil {
			return
		}
		back, err := ParseCondition(c.String())
		if err != nil || back != c {
			t.Fatalf("%q parsed as %+v, whose String %q reads back as %+v, %v", s, c, c.String(), back, err)
		}
		c.Match(row)
		Filter{Include: []Condition{c}, Exclude: []Condition{c}}.Keep(row)
	})
}

// TestProcessRows: Process Create is the parent's row naming the child's
// image, pid and command line; Process Exit is the exiting process's row
// with its exit status, times and peak working set.
func TestProcessRows(t *testing.T) {
	var buf bytes.Buffer
	rec := trace.NewRecorder(&buf, trace.Options{Proc: "svchost.exe", PID: 10, Role: "was"})
	child := trace.Process{Name: "w3wp.exe", PID: 11, Role: "hla", Image: "/bin/hla", CommandLine: "w3wp.exe --model iis"}
	rec.ProcessCreate(child)
	child.Exit = &trace.Exit{Code: -1, Signal: "SIGKILL", UserTime: 15625 * time.Microsecond, KernelTime: 31250 * time.Microsecond, PeakRSS: 12345678, Death: true}
	rec.ProcessExit(child)
	evs, err := trace.ReadEvents("test", &buf)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if _, err := WriteTable(&out, evs, nil, Filter{}, 0); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"svchost.exe   10   Process Create  /bin/hla  SUCCESS  PID: 11, Command line: w3wp.exe --model iis",
		"w3wp.exe      11   Process Exit              SUCCESS  Exit Status: -1 (was killed by signal 9 (SIGKILL)), User Time: 0.0156250 seconds, Kernel Time: 0.0312500 seconds, Peak Working Set: 12,345,678",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("view lacks\n%s\n in:\n%s", want, out.String())
		}
	}
	if evs[1].Proc != "w3wp.exe" || evs[1].PID != 11 || evs[1].Role != "hla" {
		t.Errorf("Process Exit is recorded as %s (pid %d, %s), want the child's row", evs[1].Proc, evs[1].PID, evs[1].Role)
	}
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {12345678, "12,345,678"}, {-1234, "-1,234"}} {
		if got := thousands(c.n); got != c.want {
			t.Errorf("thousands(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
