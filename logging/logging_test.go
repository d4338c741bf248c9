package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestVendorWriterLayout(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(VendorWriter(&buf)).Hook(Stamp{}).With().Int("pid", 1972).Logger()
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

func TestAgentLogLine(t *testing.T) {
	at := time.Date(2017, 4, 18, 23, 23, 35, 123456789, time.Local)
	got := AgentLogLine(1972, 2856, at, "hostname='trust_wa1'.")
	if want := "[1972/2856][Tue Apr 18 2017 23:23:35] hostname='trust_wa1'.\n"; got != want {
		t.Errorf("AgentLogLine = %q, want the seed's %q", got, want)
	}
}

func TestStampKeepsSubSecondTime(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf).Hook(Stamp{})
	log.Info().Msg("x")
	var rec struct {
		Time string `json:"time"`
		TID  int    `json:"tid"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	// RFC3339Nano drops trailing zeros, so the layout is checked by parsing
	// it back, and the precision by the layout's fraction.
	if _, err := time.Parse(TimeFormat, rec.Time); err != nil || rec.TID == 0 || !strings.Contains(TimeFormat, ".999999999") {
		t.Fatalf("record %s: time %v, tid %d", buf.Bytes(), err, rec.TID)
	}
}
