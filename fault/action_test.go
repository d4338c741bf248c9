package fault

import (
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/tli"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want Action
		err  string
	}{
		{"kill", Action{Kind: Kill}, ""},
		{"  restart ", Action{Kind: Restart}, ""},
		{"reset", Action{Kind: Reset}, ""},
		{"resume", Action{Kind: Resume}, ""},
		{"stop-accepting", Action{Kind: StopAccepting}, ""},
		{"stop-accepting refuse", Action{Kind: StopAccepting}, ""},
		{"stop-accepting queue", Action{Kind: StopAccepting, Queue: true}, ""},
		{"stall 10s", Action{Kind: Stall, For: 10 * time.Second}, ""},
		{"stall 1m30s", Action{Kind: Stall, For: 90 * time.Second}, ""},
		{"stall 24h", Action{Kind: Stall, For: 24 * time.Hour}, ""},
		{"reject-handshakes", Action{Kind: RejectHandshakes}, ""},
		{"reject-handshakes 3157", Action{Kind: RejectHandshakes, Code: 3157}, ""},
		{"reject-handshakes 3152", Action{Kind: RejectHandshakes, Code: 3152}, ""},
		{"slow-directory 800ms", Action{Kind: SlowDirectory, Latency: 800 * time.Millisecond}, ""},
		{"slow-directory 1m", Action{Kind: SlowDirectory, Latency: time.Minute}, ""},
		{"fast-directory", Action{Kind: FastDirectory}, ""},
		{"flushrequests", Action{Kind: FlushRequests}, ""},
		{"slow-directory", Action{}, "slow-directory needs a duration, such as slow-directory 800ms"},
		{"slow-directory 0s", Action{}, `slow-directory "0s": want a positive duration such as 800ms (fast-directory puts the store's latency back)`},
		{"slow-directory fast", Action{}, "want a positive duration"},
		{"slow-directory 1m0s1ns", Action{}, `slow-directory "1m0s1ns": at most 1m0s`},
		{"fast-directory 0s", Action{}, `fast-directory: unexpected "0s"`},
		{"flushrequests all", Action{}, `flushrequests: unexpected "all"`},
		{"", Action{}, "no action: want kill, restart, stop-accepting [refuse|queue], reset, stall DURATION, reject-handshakes [CODE], resume, slow-directory DURATION, fast-directory or flushrequests"},
		{"explode", Action{}, `unknown action "explode": want kill, restart,`},
		{"Kill", Action{}, "unknown action"},
		{"kill now", Action{}, `kill: unexpected "now"`},
		{"stall", Action{}, "stall needs a duration, such as stall 10s"},
		{"stall 10", Action{}, `stall "10": want a positive duration`},
		{"stall -1s", Action{}, "positive duration"},
		{"stall 0s", Action{}, "positive duration"},
		{"stall 1s 2s", Action{}, `stall: unexpected "2s"`},
		{"stall 24h0m1s", Action{}, `stall "24h0m1s": at most 24h0m0s`},
		// Its deadline would overflow past year 2262: smps acknowledged it and did nothing.
		{"stall 2100000h", Action{}, `stall "2100000h": at most 24h0m0s`},
		{"stop-accepting drop", Action{}, `stop-accepting "drop": want refuse`},
		{"stop-accepting queue now", Action{}, `stop-accepting: unexpected "now"`},
		{"reject-handshakes 42", Action{}, `reject-handshakes "42": want one of the vendor's handshake error codes 3152 to 3157`},
		{"reject-handshakes 3151", Action{}, "3152 to 3157"},
		{"reject-handshakes 3158", Action{}, "3152 to 3157"},
		{"reject-handshakes x", Action{}, "3152 to 3157"},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want an error saying %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		if back, err := Parse(got.String()); err != nil || back != got {
			t.Errorf("%q: String %q reads back as %+v, %v", c.in, got.String(), back, err)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%q parsed, but Validate says %v", c.in, err)
		}
	}
}

// TestLimitsFromTLI: the codes reject-handshakes takes are tli's, all of
// them, and the default is one of them.
func TestLimitsFromTLI(t *testing.T) {
	for code := MinRejectCode; code <= MaxRejectCode; code++ {
		if strings.HasPrefix(tli.CodeText(code), "handshake error") {
			t.Errorf("code %d has no vendor wording in tli", code)
		}
	}
	for _, code := range []int{MinRejectCode - 1, MaxRejectCode + 1} {
		if !strings.HasPrefix(tli.CodeText(code), "handshake error") {
			t.Errorf("tli knows code %d, outside %d to %d", code, MinRejectCode, MaxRejectCode)
		}
	}
	if a := (Action{Kind: RejectHandshakes}); a.RejectCode() != tli.CodeSecretIncorrect {
		t.Errorf("default code %d", a.RejectCode())
	}
	if a := (Action{Kind: RejectHandshakes, Code: tli.CodeBadVersion}); a.RejectCode() != tli.CodeBadVersion {
		t.Errorf("given code %d", a.RejectCode())
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		a         Action
		err       string // Validate
		serverErr string // CheckServer; "" when it says what Validate says
	}{
		{Action{Kind: Kill}, "", `unknown fault "kill": want stop-accepting, reset, stall, reject-handshakes, resume, slow-directory, fast-directory or flushrequests`},
		{Action{Kind: SlowDirectory, Latency: time.Second}, "", ""},
		{Action{Kind: SlowDirectory}, "slow-directory 0s: want a positive duration", ""},
		{Action{Kind: SlowDirectory, Latency: time.Hour}, "slow-directory 1h0m0s: at most 1m0s", ""},
		{Action{Kind: FlushRequests}, "", ""},
		{Action{Kind: Restart}, "", `unknown fault "restart"`},
		{Action{Kind: Reset}, "", ""},
		{Action{Kind: RejectHandshakes}, "", ""},
		{Action{Kind: Stall, For: time.Second}, "", ""},
		{Action{Kind: "explode"}, `unknown action "explode"`, `unknown fault "explode"`},
		{Action{Kind: Stall}, "stall 0s: want a positive duration", ""},
		{Action{Kind: Stall, For: 2100000 * time.Hour}, "at most 24h0m0s", ""},
		{Action{Kind: RejectHandshakes, Code: 42}, "reject-handshakes 42: want one of the vendor's handshake error codes 3152 to 3157", ""},
	}
	for _, c := range cases {
		check := func(what string, err error, want string) {
			if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
				t.Errorf("%s(%+v) = %v, want %q", what, c.a, err, want)
			}
		}
		check("Validate", c.a.Validate(), c.err)
		if c.serverErr == "" {
			c.serverErr = c.err
		}
		check("CheckServer", c.a.CheckServer(), c.serverErr)
	}
}
