package fault

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseControl(t *testing.T) {
	cases := []struct {
		path, query string
		want        Action
		err         string
	}{
		{"/faults/stop-accepting", "", Action{Kind: StopAccepting}, ""},
		{"/faults/stop-accepting", "mode=refuse", Action{Kind: StopAccepting}, ""},
		{"/faults/stop-accepting", "mode=queue", Action{Kind: StopAccepting, Queue: true}, ""},
		{"/faults/reset", "", Action{Kind: Reset}, ""},
		{"/faults/stall", "for=10s", Action{Kind: Stall, For: 10 * time.Second}, ""},
		{"/faults/stall", "for=24h", Action{Kind: Stall, For: MaxStall}, ""},
		// No code: smps's default, as a lab file without one.
		{"/faults/reject-handshakes", "", Action{Kind: RejectHandshakes}, ""},
		{"/faults/reject-handshakes", "code=3152", Action{Kind: RejectHandshakes, Code: 3152}, ""},
		{"/faults/resume", "", Action{Kind: Resume}, ""},
		{"/faults/slow-directory", "latency=800ms", Action{Kind: SlowDirectory, Latency: 800 * time.Millisecond}, ""},
		{"/faults/fast-directory", "", Action{Kind: FastDirectory}, ""},
		{"/faults/flushrequests", "", Action{Kind: FlushRequests}, ""},
		{"/faults/slow-directory", "", Action{}, "slow-directory needs latency=DURATION, such as latency=800ms"},
		{"/faults/slow-directory", "latency=2m", Action{}, `slow-directory latency "2m": at most 1m0s`},
		{"/faults/flushrequests", "latency=1s", Action{}, "takes no parameter"},
		{"/faults/", "", Action{}, "want /faults/ACTION, ACTION one of stop-accepting, reset, stall, reject-handshakes, resume, slow-directory, fast-directory or flushrequests"},
		{"/faults/reset/now", "", Action{}, "want /faults/ACTION"},
		{"/other/reset", "", Action{}, "want /faults/ACTION"},
		{"/faults/explode", "", Action{}, `unknown fault "explode"`},
		// The lab's own actions are no command of smps.
		{"/faults/kill", "", Action{}, `unknown fault "kill"`},
		{"/faults/restart", "", Action{}, `unknown fault "restart"`},
		{"/faults/stop-accepting", "mode=drop", Action{}, `stop-accepting mode "drop": want refuse`},
		{"/faults/stop-accepting", "for=1s", Action{}, `takes only "mode"`},
		{"/faults/reset", "x=1", Action{}, "takes no parameter"},
		{"/faults/reset", "=x", Action{}, `takes no parameter, got ""`},
		{"/faults/resume", "=", Action{}, "takes no parameter"},
		{"/faults/stall", "for=24h0m1s", Action{}, `stall for "24h0m1s": at most 24h0m0s`},
		// Past year 2262 the deadline overflows: it was acknowledged, not applied.
		{"/faults/stall", "for=2100000h", Action{}, "at most 24h0m0s"},
		{"/faults/stall", "", Action{}, "stall needs for=DURATION, such as for=10s"},
		{"/faults/stall", "for=soon", Action{}, `stall for "soon": want a positive duration`},
		{"/faults/stall", "for=-1s", Action{}, "positive duration"},
		{"/faults/stall", "for=1s&for=2s", Action{}, `stall: "for" given 2 times`},
		{"/faults/reject-handshakes", "code=abc", Action{}, `reject-handshakes code "abc": want one of the vendor's handshake error codes 3152 to 3157`},
		{"/faults/reject-handshakes", "code=3158", Action{}, "3152 to 3157"},
		{"/faults/stall", "for=%zz", Action{}, "query"},
	}
	for _, c := range cases {
		got, err := ParseControl(c.path, c.query)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s?%s: %v, want an error saying %q", c.path, c.query, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s?%s = %+v, %v; want %+v", c.path, c.query, got, err, c.want)
			continue
		}
		// The lab writes the request from the action; smps reads it back.
		path, query, _ := strings.Cut(got.ControlPath(), "?")
		if back, err := ParseControl(path, query); err != nil || back != got {
			t.Errorf("%s?%s: ControlPath %q reads back as %+v, %v", c.path, c.query, got.ControlPath(), back, err)
		}
	}
}

func TestControlPath(t *testing.T) {
	cases := []struct {
		action string
		want   string
	}{
		{"reset", "/faults/reset"},
		{"resume", "/faults/resume"},
		{"stop-accepting", "/faults/stop-accepting"},
		{"stop-accepting refuse", "/faults/stop-accepting"},
		{"stop-accepting queue", "/faults/stop-accepting?mode=queue"},
		{"stall 2s", "/faults/stall?for=2s"},
		{"stall 1m30s", "/faults/stall?for=1m30s"},
		{"reject-handshakes", "/faults/reject-handshakes"},
		{"reject-handshakes 3153", "/faults/reject-handshakes?code=3153"},
	}
	for _, c := range cases {
		a, err := Parse(c.action)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.ControlPath(); got != c.want {
			t.Errorf("%q: %s, want %s", c.action, got, c.want)
		}
	}
}

// FuzzParseControl: whatever the control API accepts is a command of
// smps within the limits, takes no parameter it does not name, and reads
// back the same from both spellings.
func FuzzParseControl(f *testing.F) {
	f.Add("/faults/stall", "for=10s")
	f.Add("/faults/stop-accepting", "mode=queue")
	f.Add("/faults/reject-handshakes", "code=3153")
	f.Add("/faults/reset", "")
	f.Add("/faults/resume", "a=%00")
	f.Add("/faults/reset", "=x")
	f.Add("/faults/stall", "for=2100000h")
	f.Add("/faults/kill", "")
	f.Add("/faults/slow-directory", "latency=800ms")
	f.Add("/faults/slow-directory", "latency=-1s")
	f.Add("/faults/fast-directory", "")
	f.Add("/faults/flushrequests", "latency=1s")
	f.Fuzz(func(t *testing.T, path, query string) {
		a, err := ParseControl(path, query)
		if err != nil {
			return
		}
		if err := a.CheckServer(); err != nil {
			t.Fatalf("%s?%s accepted as %+v, which CheckServer refuses: %v", path, query, a, err)
		}
		if q, _ := url.ParseQuery(query); len(q) > 0 && (a.Kind == Reset || a.Kind == Resume || a.Kind == FastDirectory || a.Kind == FlushRequests) {
			t.Fatalf("%s accepted with parameters %q", a.Kind, query)
		}
		if back, err := Parse(a.String()); err != nil || back != a {
			t.Fatalf("%s?%s: %+v reads back from %q as %+v, %v", path, query, a, a.String(), back, err)
		}
		p, q, _ := strings.Cut(a.ControlPath(), "?")
		if back, err := ParseControl(p, q); err != nil || back != a {
			t.Fatalf("%s?%s: %+v reads back from %q as %+v, %v", path, query, a, a.ControlPath(), back, err)
		}
	})
}
