package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/ipc"
)

// The test binary plays the llawp binary when this is set: main() runs as
// it would in the real one.
const asMain = "AGENTLAB_LLAWP_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestStartedByHandOrMisconfigured(t *testing.T) {
	cookie := ipc.Handshake.MagicCookieKey + "=" + ipc.Handshake.MagicCookieValue
	missing := filepath.Join(t.TempDir(), "WebAgent.conf")
	tests := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stderr string
	}{
		{"by hand", nil, []string{"--webagent", missing}, 1, "not\nmeant to be run by hand"},
		{"help by hand", nil, []string{"--help"}, 0, ""},
		{"no --webagent", []string{cookie}, nil, 2, "llawp: missing flags: --webagent=FILE (see llawp --help)\n"},
		{"no WebAgent.conf", []string{cookie}, []string{"--webagent", missing}, 1, "WebAgent.conf"},
		{"bad flag", []string{cookie}, []string{"--linger", "soon"}, 2, `llawp: --linger: expected duration but got "soon"`},
		{"bad flag by hand", nil, []string{"--lingr", "1s"}, 2, `llawp: unknown flag --lingr, did you mean "--linger"? (see llawp --help)` + "\n"},
		{"negative --poll", []string{cookie}, []string{"--webagent", missing, "--poll", "-1s"}, 2, "llawp: --poll -1s: must not be negative"},
		{"long --proc-name", []string{cookie}, []string{"--webagent", missing, "--proc-name", "a-name-too-long-for-comm"}, 2, "has 24 bytes"},
		{"bad --source", []string{cookie}, []string{"--webagent", missing, "--source", "wa1.shared.lab"}, 1, `--source: \"wa1.shared.lab\" is not an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tt.args...)
			cmd.Env = append(os.Environ(), asMain+"=1", ipc.Handshake.MagicCookieKey+"=")
			cmd.Env = append(cmd.Env, tt.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			switch {
			case tt.code == 0 && err != nil:
				t.Fatalf("exit: %v, want status 0 (stderr: %s)", err, stderr.String())
			case tt.code != 0 && (!errors.As(err, &exit) || exit.ExitCode() != tt.code):
				t.Fatalf("exit: %v, want status %d (stderr: %s)", err, tt.code, stderr.String())
			}
			if tt.code == 0 {
				if first, _, _ := strings.Cut(stdout.String(), "\n"); !strings.HasPrefix(first, "llawp - the low-level agent worker process") {
					t.Errorf("--help starts %q", first)
				}
				return
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout belongs to go-plugin's handshake, yet got %q", stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.stderr)
			}
			if tt.code == 2 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("a usage error printed more than one line: %q", stderr.String())
			}
		})
	}
}
