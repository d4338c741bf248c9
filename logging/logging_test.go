package logging

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestVendorWriterLayout(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(VendorWriter(&buf)).Hook(tidHook{}).With().Timestamp().Int("pid", 1972).Logger()
	log.Info().Msg("hostname='trust_wa1'.")
	line := strings.TrimSpace(buf.String())
	re := regexp.MustCompile(`^\[1972/\d+\]\[[A-Z][a-z]{2} [A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2}\]\[INFO\] hostname='trust_wa1'\.$`)
	if !re.MatchString(line) {
		t.Fatalf("line %q does not have the vendor layout", line)
	}
}

func TestNewWritesBothFiles(t *testing.T) {
	dir := t.TempDir()
	human, js := filepath.Join(dir, "smps.log"), filepath.Join(dir, "smps.jsonl")
	l, err := New(Options{Proc: "smps", Role: "policyserver", File: human, JSONFile: js})
	if err != nil {
		t.Fatal(err)
	}
	l.Info().Str("peer", "127.0.0.11:50134").Msg("Handshake error: Shared secret incorrect for this client")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	h, _ := os.ReadFile(human)
	j, _ := os.ReadFile(js)
	if !strings.Contains(string(h), "[INFO] Handshake error: Shared secret incorrect for this client peer=127.0.0.11:50134") {
		t.Errorf("human log: %q", h)
	}
	if !strings.Contains(string(j), `"proc":"smps"`) || !strings.Contains(string(j), `"role":"policyserver"`) {
		t.Errorf("json log: %q", j)
	}
}

func TestNewBadPath(t *testing.T) {
	_, err := New(Options{File: filepath.Join(t.TempDir(), "missing", "x.log")})
	if err == nil || !strings.Contains(err.Error(), "x.log") {
		t.Fatalf("want an error naming the file, got %v", err)
	}
}
