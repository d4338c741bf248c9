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
		want smreghost
	}{
		{"what a lab passes", []string{"-i", "127.0.0.21:44443", "-u", "siteminder", "-p", "siteminder", "-hn", "trust_wa1", "-hc", "hco.smps1",
			"-f", "out/SmHost.conf", "-o", "--hosts", "out/hosts", "--trace", "out", "--source", "127.0.0.11"},
			smreghost{Server: "127.0.0.21:44443", User: "siteminder", Password: "siteminder", HostName: "trust_wa1", HCO: "hco.smps1",
				File: "out/SmHost.conf", Overwrite: true, FIPSMode: "COMPAT", Hosts: "out/hosts", Trace: "out", Source: "127.0.0.11", Timeout: 30 * time.Second}},
		{"defaults, -cf and -sh", []string{"-i", "smps1.shared.lab", "-u", "a", "-p", "-starts-with-a-hyphen", "-hn", "t", "-hc", "h", "-cf", "only", "-sh", "s3cret", "--timeout", "5s"},
			smreghost{Server: "smps1.shared.lab", User: "a", Password: "-starts-with-a-hyphen", HostName: "t", HCO: "h",
				File: "SmHost.conf", FIPSMode: "only", Secret: "s3cret", Timeout: 5 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c smreghost
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
	all := "-i x -u a -p b -hn t -hc h "
	tests := []struct{ args, line string }{
		{"-i x", "smreghost: missing -u, -p, -hn, -hc (see smreghost --help)"},
		{all + "-cf NEVER", `smreghost: -cf "NEVER": want COMPAT, MIGRATE or ONLY (see smreghost --help)`},
		{all + "-hq y", "smreghost: unknown flag -hq, did you mean -hc or -hn? (see smreghost --help)"},
		{all + "-source 127.0.0.11", "smreghost: unknown flag -source, did you mean --source? (see smreghost --help)"},
		{all + "--timeout soon", `smreghost: --timeout: expected duration but got "soon": time: invalid duration "soon" (see smreghost --help)`},
		{all + "extra", "smreghost: unexpected argument extra (see smreghost --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p := program
			p.Stdout, p.Stderr = &stdout, &stderr
			_, err := p.Parse(&smreghost{}, strings.Fields(tt.args))
			if code := p.Report(err); code != cmdline.ExitUsage {
				t.Fatalf("exit %d (%v), want %d", code, err, cmdline.ExitUsage)
			}
			if stderr.String() != tt.line+"\n" || stdout.Len() != 0 {
				t.Errorf("stderr %q\nwant   %q", stderr.String(), tt.line+"\n")
			}
		})
	}
}

func TestHelpShowsTheVendorsSpellings(t *testing.T) {
	var out bytes.Buffer
	p := program
	p.Stdout = &out
	_, err := p.Parse(&smreghost{}, []string{"--help"})
	if p.Report(err) != cmdline.ExitOK {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); first != "smreghost - "+program.Summary {
		t.Errorf("first line %q", first)
	}
	for _, f := range []string{"-i HOST[:PORT]", "-u ADMIN", "-p PASSWORD", "-hn TRUSTEDHOST", "-hc HCO", "-f FILE", "-o ", "-cf COMPAT|MIGRATE|ONLY", "-sh SECRET", "--hosts FILE"} {
		if !strings.Contains(out.String(), "\n  "+f) {
			t.Errorf("the help lacks %q:\n%s", f, out.String())
		}
	}
}
