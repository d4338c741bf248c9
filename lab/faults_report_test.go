package lab

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// TestWriteAnswers: the report counts the web server's answers per server
// between faults, from Response events only.
func TestWriteAnswers(t *testing.T) {
	t0 := time.Now()
	ev := func(ms int, role, op, phase, host string) trace.Event {
		return trace.Event{T: t0.Add(time.Duration(ms) * time.Millisecond), Role: role, Op: op, Phase: phase, RemoteHost: host}
	}
	evs := []trace.Event{
		ev(0, "hla", trace.OpResponse, trace.PhaseHCO, "smps1"), // the ACO: not a page's request
		ev(10, "hla", trace.OpResponse, trace.PhaseRequests, "smps1"),
		ev(20, "hla", trace.OpRequest, trace.PhaseRequests, "smps1"),
		ev(30, "llawp", trace.OpResponse, trace.PhaseManagement, "smps1"),
		ev(110, "hla", trace.OpResponse, trace.PhaseRequests, "smps2"),
		ev(120, "hla", trace.OpResponse, trace.PhaseRequests, "smps2"),
		ev(210, "hla", trace.OpResponse, trace.PhaseRequests, "smps1"),
	}
	var b strings.Builder
	writeAnswers(&b, evs, []string{"smps1", "smps2"}, []answerMark{
		{t0.Add(100 * time.Millisecond), "after kill smps1"}, {t0.Add(200 * time.Millisecond), "after restart smps1"}})
	got := regexp.MustCompile(` +`).ReplaceAllString(b.String(), " ")
	for _, want := range []string{"from the first request smps1 1\n", "after kill smps1 smps2 2\n", "after restart smps1 smps1 1\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
}
