package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/cmdline"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want hlaCmd
	}{
		{"defaults", nil, hlaCmd{WebAgent: "WebAgent.conf", Listen: "127.0.0.1:8080", Model: "iis", Workers: 3, MPM: "prefork", Out: "."}},
		{"what a lab passes for IIS", []string{"--webagent", "out/WebAgent.conf", "--listen", "127.0.0.11:8080", "--model", "iis", "--out", "out",
			"--trace", "out", "--trace-payload", "--hosts", "out/hosts", "--source", "127.0.0.11", "--poll", "5s", "--health-poll", "-1s"},
			hlaCmd{WebAgent: "out/WebAgent.conf", Listen: "127.0.0.11:8080", Model: "iis", Workers: 3, MPM: "prefork", Out: "out", Trace: "out",
				TracePayload: true, Hosts: "out/hosts", Source: "127.0.0.11", Poll: 5 * time.Second, HealthPoll: -time.Second}},
		{"Apache", []string{"--model", "apache", "--workers", "2", "--mpm", "worker", "--max-requests-per-child", "100", "--aco-from-llawp",
			"--llawp", "bin/llawp", "--llawp-linger", "1s", "--upstream", "http://127.0.0.1:9000", "--proc-name", "httpd"},
			hlaCmd{WebAgent: "WebAgent.conf", Listen: "127.0.0.1:8080", Model: "apache", Workers: 2, MPM: "worker", MaxRequests: 100, ACOFromLLAWP: true,
				LLAWP: "bin/llawp", LLAWPLinger: time.Second, Upstream: "http://127.0.0.1:9000", ProcName: "httpd", Out: "."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c hlaCmd
			if _, err := program.Parse(&c, tt.args); err != nil {
				t.Fatal(err)
			}
			if c != tt.want {
				t.Errorf("parsed %+v\nwant   %+v", c, tt.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct{ args, line string }{
		{"--model nt", `hla: --model must be one of "iis","apache" but got "nt" (see hla --help)`},
		{"--workers 2", "hla: --workers: only for --model apache (see hla --help)"},
		{"--mpm worker --aco-from-llawp", "hla: --mpm, --aco-from-llawp: only for --model apache (see hla --help)"},
		{"--model apache --workers 0", "hla: --workers 0: want at least 1 (see hla --help)"},
		{"--model apache --max-requests-per-child -1", "hla: --max-requests-per-child -1: must not be negative (see hla --help)"},
		{"--upstream /app", `hla: --upstream "/app": want an absolute URL such as http://127.0.0.1:9000 (see hla --help)`},
		{"--proc-name a-name-too-long-for-comm", `hla: --proc-name: process name "a-name-too-long-for-comm" has 24 bytes; the system keeps 15 (see hla --help)`},
		{"--webagnet x", `hla: unknown flag --webagnet, did you mean "--webagent"? (see hla --help)`},
		{"-webagent x", "hla: unknown flag -webagent, did you mean --webagent? (see hla --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p := program
			p.Stdout, p.Stderr = &stdout, &stderr
			_, err := p.Parse(&hlaCmd{}, strings.Fields(tt.args))
			if code := p.Report(err); code != cmdline.ExitUsage {
				t.Fatalf("exit %d (%v), want %d", code, err, cmdline.ExitUsage)
			}
			if stderr.String() != tt.line+"\n" || stdout.Len() != 0 {
				t.Errorf("stderr %q\nwant   %q", stderr.String(), tt.line+"\n")
			}
		})
	}
}
