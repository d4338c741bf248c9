package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/cmdline"
)

func TestParseRun(t *testing.T) {
	tests := []struct {
		name  string
		args  string
		check func(c runCmd) bool
	}{
		{"defaults", "run", func(c runCmd) bool { return c.Rows == 400 && c.Lab == "" }},
		{"every row, as the help says", "run --rows -1", func(c runCmd) bool { return c.Rows == -1 }},
		{"every row, with =", "run --rows=-1", func(c runCmd) bool { return c.Rows == -1 }},
		{"a lab and its flags", "run failover --poll 30s --model apache --workers 2 --mpm worker --max-requests-per-child 5 --aco-from-llawp --hold --all",
			func(c runCmd) bool {
				return c.Lab == "failover" && c.Poll == 30*time.Second && c.Model == "apache" && c.Workers == 2 && c.MPM == "worker" &&
					c.MaxRequests == 5 && c.ACOFromLLAWP && c.Hold && c.All
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cli
			if _, err := program.Parse(&c, strings.Fields(tt.args)); err != nil {
				t.Fatal(err)
			}
			if !tt.check(c.Run) {
				t.Errorf("parsed %+v", c.Run)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct{ args, line string }{
		{"", `agentlab: expected one of "run", "compare", "probe", "pcap", "procmon", ... (see agentlab --help)`},
		{"runn", `agentlab: unexpected argument runn, did you mean "run"? (see agentlab --help)`},
		{"run --rowz 1", `agentlab: unknown flag --rowz, did you mean "--rows"? (see agentlab run --help)`},
		{"run --rows many", `agentlab: --rows: expected a valid 64 bit int but got "many" (see agentlab run --help)`},
		{"run --model nt", `agentlab: run: --model "nt": want iis or apache (see agentlab run --help)`},
		{"run --requests -1", "agentlab: run: --requests, --duration, --rate and --concurrency must not be negative (see agentlab run --help)"},
		{"run -rows 1", "agentlab: unknown flag -rows, did you mean --rows? (see agentlab --help)"},
		{"compare --poll 0s", "agentlab: compare: --workers, --requests, --concurrency and --poll must be positive, --max-requests-per-child not negative (see agentlab compare --help)"},
		{"probe", "agentlab: expected \"<file>\" (see agentlab probe --help)"},
		{"conf check", "agentlab: expected \"<file>\" (see agentlab conf check --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p := program
			p.Stdout, p.Stderr = &stdout, &stderr
			_, err := p.Parse(&cli{}, strings.Fields(tt.args))
			if code := p.Report(err); code != cmdline.ExitUsage {
				t.Fatalf("exit %d (%v), want %d", code, err, cmdline.ExitUsage)
			}
			if stderr.String() != tt.line+"\n" || stdout.Len() != 0 {
				t.Errorf("stderr %q\nwant   %q", stderr.String(), tt.line+"\n")
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, tt := range []struct{ args, first string }{
		{"--help", "agentlab - " + program.Summary},
		{"run --help", "agentlab run - Run a lab: Policy Servers, registration, bootstrap, and the trace."},
		{"conf check --help", "agentlab conf check - Check a WebAgent.conf or SmHost.conf and print what the agent would use."},
	} {
		var stdout, stderr bytes.Buffer
		p := program
		p.Stdout, p.Stderr = &stdout, &stderr
		_, err := p.Parse(&cli{}, strings.Fields(tt.args))
		if p.Report(err) != cmdline.ExitOK {
			t.Fatalf("%s: %v", tt.args, err)
		}
		if first, _, _ := strings.Cut(stdout.String(), "\n"); first != tt.first {
			t.Errorf("%s: first line %q, want %q", tt.args, first, tt.first)
		}
		if tt.args == "run --help" && !strings.Contains(strings.Join(strings.Fields(stdout.String()), " "), "--rows -1 for every row") {
			t.Errorf("run --help does not say --rows -1:\n%s", stdout.String())
		}
	}
}
