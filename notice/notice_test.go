package notice

import (
	"reflect"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/trace"
)

func TestRoundTrip(t *testing.T) {
	exit := &trace.Exit{Code: -1, Signal: "SIGKILL", Death: true, Action: "WAS starts a new w3wp.exe"}
	for _, n := range []Notice{
		{Prog: "smps", Kind: Listening, Addr: "127.0.0.21:44443"},
		{Prog: "smps", Kind: Control, Addr: "127.0.0.21:9001"},
		{Prog: "llawp", Kind: Metrics, Addr: "127.0.0.11:40123"},
		{Prog: "hla", Kind: Serving, Addr: "http://127.0.0.11:8080"},
		{Prog: "hla", Kind: Started, Process: &trace.Process{Name: "w3wp.exe", PID: 42, Role: "hla", Parent: "svchost.exe", ParentPID: 7}},
		{Prog: "hla", Kind: Exited, Process: &trace.Process{Name: "w3wp.exe", PID: 42, Exit: exit}},
		{Prog: "hla", Kind: HCODone},
		{Prog: "hla", Kind: Recycling},
	} {
		line := n.String()
		got, ok := Parse(line + "\n")
		if !ok {
			t.Errorf("Parse(%q) refused its own line", line)
			continue
		}
		if !reflect.DeepEqual(got, n) {
			t.Errorf("Parse(%q) = %+v, want %+v", line, got, n)
		}
	}
}

// The lines the programs printed before this package stay what they were:
// the README and people's scripts quote them.
func TestLinesAsDocumented(t *testing.T) {
	for _, c := range []struct {
		n    Notice
		want string
	}{
		{Notice{Prog: "smps", Kind: Listening, Addr: "127.0.0.21:44443"}, "smps: listening on 127.0.0.21:44443"},
		{Notice{Prog: "smps", Kind: Control, Addr: "127.0.0.21:9001"}, "smps: control on 127.0.0.21:9001"},
		{Notice{Prog: "smps", Kind: Metrics, Addr: "127.0.0.21:9464"}, "smps: metrics on 127.0.0.21:9464"},
		{Notice{Prog: "hla", Kind: Serving, Addr: "http://127.0.0.11:8080"}, "hla: serving http://127.0.0.11:8080"},
	} {
		if got := c.n.String(); got != c.want {
			t.Errorf("%+v prints %q, want %q", c.n, got, c.want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, line := range []string{
		"", "hello", "smps listening on x", "smps: listening on", "smps: listening on a b",
		": listening on 1.2.3.4:5", "two words: serving http://x", "hla: serving ",
		"hla: exited {", `hla: exited {"name":"w3wp.exe","pid":3}`, // no exit status
		`hla: started {"name":"","pid":3}`, `hla: started {"name":"x","pid":0}`,
		"hla: stopping now", "hla: serving soon", "hla: serving 127.0.0.1:80", "smps: listening on everything",
		"hla: recycling now", "hla: hco phase done 3", "hla: recycling ", "hla: hco", // bare kinds take nothing after them
	} {
		if n, ok := Parse(line); ok {
			t.Errorf("Parse(%q) = %+v, want refused", line, n)
		}
	}
}

func TestParseKind(t *testing.T) {
	line := Notice{Prog: "hla", Kind: Serving, Addr: "http://x:1"}.String()
	if _, ok := ParseKind(line, "hla", Serving); !ok {
		t.Error("ParseKind refused hla's serving line")
	}
	if _, ok := ParseKind(line, "smps", Serving); ok {
		t.Error("ParseKind took hla's line for smps's")
	}
	if _, ok := ParseKind(line, "hla", Listening); ok {
		t.Error("ParseKind took a serving line for a listening one")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("smps: listening on 127.0.0.1:1")
	f.Add(`hla: exited {"name":"w3wp.exe","pid":4,"exit":{"code":-1,"signal":"SIGKILL"}}`)
	f.Add("hla: recycling")
	f.Fuzz(func(t *testing.T, line string) {
		n, ok := Parse(line)
		if !ok {
			return
		}
		// What Parse accepts, String writes back to a line Parse reads the same.
		again, ok := Parse(n.String())
		if !ok || !reflect.DeepEqual(again, n) {
			t.Fatalf("Parse(%q) = %+v; its String %q parses as %+v, %v", line, n, n.String(), again, ok)
		}
		if strings.Contains(n.String(), "\n") {
			t.Fatalf("notice %q spans lines", n.String())
		}
	})
}
