package cmdline

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

type serve struct {
	Listen []string      `default:"127.0.0.1:1" sep:"none" placeholder:"ADDR" help:"Address."`
	Rows   int           `default:"400" placeholder:"N" help:"Rows to print."`
	Linger time.Duration `default:"1m" help:"How long."`
	Rate   int64         `help:"Rate."`
	Debug  bool          `help:"Debug."`
	Mode   string        `enum:"a,b" default:"a" help:"Mode."`
}

func (s *serve) Validate() error {
	if s.Rows == 0 {
		return errors.New("--rows 0: want a count, or -1 for all")
	}
	return nil
}

type tool struct {
	Run struct {
		Rows int `default:"400" help:"Rows."`
	} `cmd:"" help:"Run a lab.\nMore about it."`
	Check struct {
		File string `arg:""`
	} `cmd:"" help:"Check a file."`
}

func TestParse(t *testing.T) {
	p := Program{Name: "prog", Summary: "a test program"}
	tests := []struct {
		name string
		args []string
		want serve
	}{
		{"defaults", nil, serve{Listen: []string{"127.0.0.1:1"}, Rows: 400, Linger: time.Minute, Mode: "a"}},
		{"negative int as its own argument", []string{"--rows", "-1"}, serve{Listen: []string{"127.0.0.1:1"}, Rows: -1, Linger: time.Minute, Mode: "a"}},
		{"negative int with =", []string{"--rows=-1"}, serve{Listen: []string{"127.0.0.1:1"}, Rows: -1, Linger: time.Minute, Mode: "a"}},
		{"negative int64", []string{"--rate", "-5"}, serve{Listen: []string{"127.0.0.1:1"}, Rows: 400, Linger: time.Minute, Rate: -5, Mode: "a"}},
		{"negative duration", []string{"--linger", "-1ns"}, serve{Listen: []string{"127.0.0.1:1"}, Rows: 400, Linger: -1, Mode: "a"}},
		{"fraction", []string{"--linger", "-.5s"}, serve{Listen: []string{"127.0.0.1:1"}, Rows: 400, Linger: -500 * time.Millisecond, Mode: "a"}},
		{"repeated", []string{"--listen", "a:1", "--listen", "b:2,c:3", "--debug", "--mode", "b"},
			serve{Listen: []string{"a:1", "b:2,c:3"}, Rows: 400, Linger: time.Minute, Debug: true, Mode: "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got serve
			if _, err := p.Parse(&got, tt.args); err != nil {
				t.Fatal(err)
			}
			if !equalServe(got, tt.want) {
				t.Errorf("parsed %+v, want %+v", got, tt.want)
			}
		})
	}
}

func equalServe(a, b serve) bool {
	return strings.Join(a.Listen, " ") == strings.Join(b.Listen, " ") && a.Rows == b.Rows && a.Linger == b.Linger &&
		a.Rate == b.Rate && a.Debug == b.Debug && a.Mode == b.Mode
}

func TestUsageErrors(t *testing.T) {
	p := Program{Name: "prog", Summary: "a test program"}
	tests := []struct {
		name string
		args []string
		line string
	}{
		{"unknown flag", []string{"--lisen", "x"}, `prog: unknown flag --lisen, did you mean "--listen"? (see prog --help)`},
		{"bad value", []string{"--rows", "many"}, `prog: --rows: expected a valid 64 bit int but got "many" (see prog --help)`},
		{"a flag where its value should be", []string{"--rows", "--debug"}, `prog: --rows: expected int value but got "--debug" (long flag); perhaps try --rows="--debug"? (see prog --help)`},
		{"missing value", []string{"--linger"}, `prog: --linger: expected duration value but got "EOL" (<EOL>) (see prog --help)`},
		{"unexpected argument", []string{"extra"}, `prog: unexpected argument extra (see prog --help)`},
		{"not in the enum", []string{"--mode", "c"}, `prog: --mode must be one of "a","b" but got "c" (see prog --help)`},
		{"Validate", []string{"--rows", "0"}, `prog: --rows 0: want a count, or -1 for all (see prog --help)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p.Stdout, p.Stderr = &stdout, &stderr
			_, err := p.Parse(&serve{}, tt.args)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("Parse: %v, want a usage error", err)
			}
			if code := p.Report(err); code != ExitUsage {
				t.Errorf("exit status %d, want %d", code, ExitUsage)
			}
			if got := stderr.String(); got != tt.line+"\n" {
				t.Errorf("stderr %q\nwant   %q", got, tt.line+"\n")
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		name    string
		grammar any
		args    []string
		first   string
		has     []string
		hasNot  []string
	}{
		{"program", &serve{}, []string{"--help"}, "prog - a test program", []string{"Usage: prog [flags]", "--rows=N", "Rows to print (default: 400).", "--linger=1m"}, nil},
		{"short", &serve{}, []string{"-h"}, "prog - a test program", nil, nil},
		{"after other flags", &serve{}, []string{"--rows", "-1", "--help"}, "prog - a test program", nil, nil},
		{"subcommand", &tool{}, []string{"run", "--help"}, "prog run - Run a lab.", []string{"Usage: prog run", "More about it."}, []string{"Run a lab.\n"}},
		{"program with subcommands", &tool{}, []string{"--help"}, "prog - a test program", []string{"run", "check <file>"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			p := Program{Name: "prog", Summary: "a test program", Stdout: &stdout, Stderr: &stderr}
			_, err := p.Parse(tt.grammar, tt.args)
			if !errors.Is(err, ErrHelp) || p.Report(err) != ExitOK {
				t.Fatalf("Parse: %v, want ErrHelp and exit 0", err)
			}
			out := stdout.String()
			if first, _, _ := strings.Cut(out, "\n"); first != tt.first {
				t.Errorf("first line %q, want %q", first, tt.first)
			}
			for _, s := range tt.has {
				if !strings.Contains(out, s) {
					t.Errorf("the help lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tt.hasNot {
				if strings.Contains(out[len(tt.first):], s) {
					t.Errorf("the help repeats %q:\n%s", s, out)
				}
			}
			if stderr.Len() != 0 {
				t.Errorf("stderr %q", stderr.String())
			}
		})
	}
}

func TestSubcommandUsageError(t *testing.T) {
	var stderr bytes.Buffer
	p := Program{Name: "prog", Summary: "s", Stderr: &stderr}
	_, err := p.Parse(&tool{}, []string{"run", "--rowz", "1"})
	p.Report(err)
	if want := "prog: unknown flag --rowz, did you mean \"--rows\"? (see prog run --help)\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
	stderr.Reset()
	_, err = p.Parse(&tool{}, nil)
	if p.Report(err) != ExitUsage || !strings.HasPrefix(stderr.String(), "prog: expected one of ") {
		t.Errorf("no command: %q", stderr.String())
	}
}

func TestReport(t *testing.T) {
	var stderr bytes.Buffer
	p := Program{Name: "prog", Stderr: &stderr}
	if p.Report(nil) != ExitOK || stderr.Len() != 0 {
		t.Error("nil")
	}
	if p.Report(errors.New("the store at s.yaml:3 is bad")) != ExitRuntime || stderr.String() != "prog: the store at s.yaml:3 is bad\n" {
		t.Errorf("runtime error: %q", stderr.String())
	}
	stderr.Reset()
	if p.Report(Usagef("--model %q: want iis or apache", "nt")) != ExitUsage || stderr.String() != "prog: --model \"nt\": want iis or apache (see prog --help)\n" {
		t.Errorf("usage error found in Run: %q", stderr.String())
	}
}
