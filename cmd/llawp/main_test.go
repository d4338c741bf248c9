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
		stderr string
	}{
		{"by hand", nil, []string{"--webagent", missing}, "not\nmeant to be run by hand"},
		{"no --webagent", []string{cookie}, nil, "--webagent is required"},
		{"no WebAgent.conf", []string{cookie}, []string{"--webagent", missing}, "WebAgent.conf"},
		{"bad flag", []string{cookie}, []string{"--linger", "soon"}, "invalid value"},
		{"bad --source", []string{cookie}, []string{"--webagent", missing, "--source", "wa1.shared.lab"}, `--source: \"wa1.shared.lab\" is not an IP address`},
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
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1 (stderr: %s)", err, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout belongs to go-plugin's handshake, yet got %q", stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.stderr)
			}
		})
	}
}
