package cmdline

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// Any command line either parses or is a usage error of one line: never a
// panic, never the help unless asked for, never a line that spans two.
func FuzzParse(f *testing.F) {
	for _, args := range []string{
		"-i\x00smps1\x00-hn\x00t\x00-o", "-p\x00-o\x00--hosts=h", "-hq\x00x", "--\x00-i", "-1", "--source\x00-1", "-h",
		"--help", "-source\x00127.0.0.1", "-i=", "-", "--f", "-f=-", "-hn=a=b",
	} {
		f.Add(args)
	}
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		var stdout, stderr bytes.Buffer
		p := vendorProgram
		p.Stdout, p.Stderr = &stdout, io.Discard
		_, err := p.Parse(&reghost{}, args)
		var ue *UsageError
		switch {
		case err == nil:
		case errors.Is(err, ErrHelp):
			if !strings.HasPrefix(stdout.String(), "reg - ") {
				t.Fatalf("%q: help %q", args, stdout.String())
			}
		case errors.As(err, &ue):
			p.Stderr = &stderr
			p.Report(err)
			if strings.Count(stderr.String(), "\n") != 1 || !strings.HasSuffix(stderr.String(), "(see reg --help)\n") {
				t.Fatalf("%q: usage error %q", args, stderr.String())
			}
		default:
			t.Fatalf("%q: %v is neither help nor a usage error", args, err)
		}
	})
}
