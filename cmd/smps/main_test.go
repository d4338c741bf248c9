package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/cmdline"
	"github.com/agentlab/agentlab/policyserver"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(c smps) bool
	}{
		{"defaults", nil, func(c smps) bool {
			return slices.Equal(c.Listen, []string{"127.0.0.1:44443"}) && c.MaxConns == policyserver.DefaultMaxConns &&
				c.IdleTimeout == policyserver.DefaultIdleTimeout && c.MaxLifetime == policyserver.DefaultMaxLifetime && c.HandshakeTimeout == 10*time.Second &&
				c.Threads == policyserver.DefaultThreads && c.QueueBound == policyserver.DefaultQueueBound && c.Metrics == "" && !c.FlushRequests
		}},
		{"what a lab passes", []string{"--listen", "127.0.0.21:44443", "--name", "smps1.shared.lab", "--hosts", "out/hosts", "--trace", "out",
			"--trace-payload", "--log", "out/smps1.log", "--log-json", "out/smps1.log.jsonl", "--registrations", "out/registrations.yaml",
			"--keylog", "keys", "--store", "store.yaml", "--control", "127.0.0.21:0", "--max-conns", "1", "--idle-timeout", "5s", "--max-lifetime", "1m",
			"--handshake-timeout", "2s", "--debug"}, func(c smps) bool {
			return slices.Equal(c.Listen, []string{"127.0.0.21:44443"}) && c.Name == "smps1.shared.lab" && c.Hosts == "out/hosts" && c.TracePayload &&
				c.LogJSON == "out/smps1.log.jsonl" && c.KeyLog == "keys" && c.Control == "127.0.0.21:0" && c.MaxConns == 1 &&
				c.IdleTimeout == 5*time.Second && c.MaxLifetime == time.Minute && c.HandshakeTimeout == 2*time.Second && c.Debug
		}},
		{"load", []string{"--threads", "2", "--queue-bound", "10", "--metrics", "127.0.0.21:0", "--max-conns", "16"}, func(c smps) bool {
			return c.Threads == 2 && c.QueueBound == 10 && c.Metrics == "127.0.0.21:0" && c.MaxConns == 16 && !c.FlushRequests
		}},
		{"flushrequests", []string{"--flushrequests", "--control", "127.0.0.21:4444"}, func(c smps) bool {
			return c.FlushRequests && c.Control == "127.0.0.21:4444"
		}},
		{"two addresses", []string{"--listen", "127.0.0.21:44443", "--listen=127.0.0.21:44444"}, func(c smps) bool {
			return slices.Equal(c.Listen, []string{"127.0.0.21:44443", "127.0.0.21:44444"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c smps
			if _, err := program.Parse(&c, tt.args); err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("parsed %+v", c)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct{ name, line string }{
		{"--lisen x", `smps: unknown flag --lisen, did you mean "--listen"? (see smps --help)`},
		{"--max-conns many", `smps: --max-conns: expected a valid 64 bit int but got "many" (see smps --help)`},
		{"--max-conns 0", `smps: --max-conns 0: want at least 1 (see smps --help)`},
		{"--idle-timeout soon", `smps: --idle-timeout: expected duration but got "soon": time: invalid duration "soon" (see smps --help)`},
		{"extra", `smps: unexpected argument extra (see smps --help)`},
		{"--threads 0", `smps: --threads 0: want at least 1 (see smps --help)`},
		{"--queue-bound 0", `smps: --queue-bound 0: want at least 1 (see smps --help)`},
		{"--flushrequests", `smps: --flushrequests needs --control: the running smps's control API address (see smps --help)`},
		{"-listen x", `smps: unknown flag -listen, did you mean --listen? (see smps --help)`},
		{"-hosts x", `smps: unknown flag -hosts, did you mean --hosts? (see smps --help)`},
		{"-x", `smps: unknown flag -x, did you mean "-h"? (see smps --help)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			usageError(t, program, &smps{}, strings.Fields(tt.name), tt.line)
		})
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	p := program
	p.Stdout = &out
	_, err := p.Parse(&smps{}, []string{"--help"})
	if p.Report(err) != cmdline.ExitOK {
		t.Fatalf("--help: %v", err)
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); first != "smps - "+program.Summary {
		t.Errorf("first line %q", first)
	}
	for _, flag := range []string{"--listen=ADDR", "--max-conns=N", "(default: 256)", "--keylog=FILE", "--threads=N", "(default: 8)", "--metrics=ADDR", "--flushrequests"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("the help lacks %q:\n%s", flag, out.String())
		}
	}
}

// usageError checks that args give exactly line on stderr, nothing on
// stdout, and exit status 2.
func usageError(t *testing.T, p cmdline.Program, grammar any, args []string, line string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	p.Stdout, p.Stderr = &stdout, &stderr
	_, err := p.Parse(grammar, args)
	if code := p.Report(err); code != cmdline.ExitUsage {
		t.Fatalf("%q: exit %d (%v), want %d", args, code, err, cmdline.ExitUsage)
	}
	if stderr.String() != line+"\n" || stdout.Len() != 0 {
		t.Errorf("%q:\nstderr %q\nwant   %q\nstdout %q", args, stderr.String(), line+"\n", stdout.String())
	}
}
