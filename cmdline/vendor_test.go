package cmdline

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

type reghost struct {
	Server    string `name:"i" placeholder:"HOST" help:"Server."`
	Password  string `name:"p" placeholder:"PASSWORD" help:"Password."`
	HostName  string `name:"hn" placeholder:"HOST" help:"Trusted host."`
	Overwrite bool   `name:"o" help:"Overwrite."`
	File      string `name:"f" default:"SmHost.conf" placeholder:"FILE" help:"File."`
	Hosts     string `placeholder:"FILE" help:"Hosts file."`
	Source    string `placeholder:"IP" help:"Source."`
}

var vendorProgram = Program{Name: "reg", Summary: "registers", Vendor: &Vendor{
	Flags: []string{"i", "p", "hn", "o", "f"},
	Usage: "reg -i <ps> -p <password> -hn <host> [-o] [-f FILE]",
}}

func TestVendorSpellings(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want reghost
	}{
		{"the vendor's", []string{"-i", "smps1", "-p", "pw", "-hn", "trust_wa1", "-o", "-f", "out/SmHost.conf"},
			reghost{Server: "smps1", Password: "pw", HostName: "trust_wa1", Overwrite: true, File: "out/SmHost.conf"}},
		{"with =", []string{"-i=smps1", "-hn=trust_wa1"}, reghost{Server: "smps1", HostName: "trust_wa1", File: "SmHost.conf"}},
		{"a value that starts with a hyphen", []string{"-p", "-o-is-my-password", "-hn", "-x"},
			reghost{Password: "-o-is-my-password", HostName: "-x", File: "SmHost.conf"}},
		{"long flags next to them", []string{"-i", "smps1", "--hosts", "out/hosts", "--source=127.0.0.11"},
			reghost{Server: "smps1", Hosts: "out/hosts", Source: "127.0.0.11", File: "SmHost.conf"}},
		{"after --", []string{"-i", "smps1", "--"}, reghost{Server: "smps1", File: "SmHost.conf"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got reghost
			if _, err := vendorProgram.Parse(&got, tt.args); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("parsed %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestVendorUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		line string
	}{
		{[]string{"-hq", "x"}, "reg: unknown flag -hq, did you mean -hn? (see reg --help)"},
		{[]string{"-source", "127.0.0.11"}, "reg: unknown flag -source, did you mean --source? (see reg --help)"},
		{[]string{"-hosts", "h"}, "reg: unknown flag -hosts, did you mean --hosts? (see reg --help)"},
		{[]string{"-zzzz"}, "reg: unknown flag -zzzz (see reg --help)"},
		{[]string{"-hn"}, `reg: -hn: expected string value but got "EOL" (<EOL>) (see reg --help)`},
		{[]string{"--hostz", "h"}, `reg: unknown flag --hostz, did you mean "--hosts"? (see reg --help)`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p := vendorProgram
			p.Stdout, p.Stderr = &stdout, &stderr
			_, err := p.Parse(&reghost{}, tt.args)
			var ue *UsageError
			if !errors.As(err, &ue) || p.Report(err) != ExitUsage {
				t.Fatalf("Parse: %v, want a usage error", err)
			}
			if stderr.String() != tt.line+"\n" || stdout.Len() != 0 {
				t.Errorf("stderr %q\nwant   %q", stderr.String(), tt.line+"\n")
			}
		})
	}
}

func TestVendorHelp(t *testing.T) {
	var stdout bytes.Buffer
	p := vendorProgram
	p.Stdout = &stdout
	if _, err := p.Parse(&reghost{}, []string{"--help"}); !errors.Is(err, ErrHelp) {
		t.Fatal(err)
	}
	lines := strings.Split(stdout.String(), "\n")
	if lines[0] != "reg - registers" || !slices.Contains(lines, "Usage: reg -i <ps> -p <password> -hn <host> [-o] [-f FILE]") {
		t.Errorf("help:\n%s", stdout.String())
	}
	for _, want := range []string{"  -i HOST ", "  -hn HOST ", "  -o ", "  -f FILE ", "File (default: SmHost.conf).", "  --hosts FILE ", "  -h, --help "} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the help lacks %q:\n%s", want, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "--hn") {
		t.Errorf("the help spells a vendor flag with two dashes:\n%s", stdout.String())
	}
}

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"hn", "hn", 0}, {"hq", "hn", 1}, {"lisen", "listen", 1}, {"abc", "", 3}, {"kitten", "sitting", 3}} {
		if got := distance(tt.a, tt.b); got != tt.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
}
