package ipc

import (
	"reflect"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/agentlab/agentlab/cmdline"
)

// What an owner passes is what the LLAWP parses: Args, parsed back with
// the LLAWP's parser, gives the same flags.
func TestLLAWPFlagsRoundTrip(t *testing.T) {
	p := cmdline.Program{Name: "llawp", Summary: "test", Options: []kong.Option{
		kong.Vars{"default_linger": "20s", "default_proc_name": "LLAWP.exe"},
	}}
	tests := []LLAWPFlags{
		{WebAgent: "WebAgent.conf", Out: "."},
		{
			WebAgent: "/out/WebAgent.conf", Out: "/out", Trace: "/out", TracePayload: true, Hosts: "/out/hosts",
			Source: "127.0.0.11", Poll: 5 * time.Second, HealthPoll: -1, Linger: -1, ProcName: "LLAWP",
			AgentName: "-an agent name with a hyphen", AgentTrace: true, Debug: true,
		},
	}
	for _, want := range tests {
		var got LLAWPFlags
		if _, err := p.Parse(&got, want.Args()); err != nil {
			t.Fatalf("parsing %q: %v", want.Args(), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q parsed as %+v, want %+v", want.Args(), got, want)
		}
	}
}

func TestLLAWPFlagsArgs(t *testing.T) {
	got := LLAWPFlags{WebAgent: "w", TracePayload: true, Poll: time.Second, Linger: -time.Nanosecond}.Args()
	want := []string{"--webagent", "w", "--trace-payload", "--poll", "1s", "--linger=-1ns"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Args = %q, want %q", got, want)
	}
}
