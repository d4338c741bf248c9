package pool

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

// c is a candidate for the table tests: index i (set by cs), cluster,
// health and latency in milliseconds.
type c struct {
	cluster int
	health  State
	ms      int
}

func cs(in ...c) []candidate {
	out := make([]candidate, len(in))
	for i, x := range in {
		out[i] = candidate{index: i, cluster: x.cluster, health: x.health, latency: time.Duration(x.ms) * time.Millisecond}
	}
	return out
}

// plain builds candidates without clusters or latencies.
func plain(states ...State) []candidate {
	in := make([]c, len(states))
	for i, s := range states {
		in[i] = c{health: s}
	}
	return cs(in...)
}

func TestNeeded(t *testing.T) {
	tests := []struct{ threshold, size, want int }{
		{60, 3, 2}, // ceil(1.8)
		{0, 3, 0},
		{100, 3, 3},
		{50, 4, 2},
		{50, 3, 2}, // ceil(1.5)
		{34, 3, 2}, // ceil(1.02)
		{33, 3, 1}, // ceil(0.99)
		{1, 1, 1},
		{99, 1, 1},
		{100, 1, 1},
	}
	for _, tt := range tests {
		if got := needed(tt.threshold, tt.size); got != tt.want {
			t.Errorf("needed(%d%%, %d) = %d, want %d", tt.threshold, tt.size, got, tt.want)
		}
	}
}

// The selection rule, case by case: order (the first choice, then the
// retries) and which servers are in use (Active rather than Inactive).
func TestRule(t *testing.T) {
	failover, rr := rule{mode: modeFailover}, rule{mode: modeRoundRobin}
	clusters := func(threshold int) rule { return rule{mode: modeClusters, threshold: threshold} }
	tests := []struct {
		name  string
		rule  rule
		cands []candidate
		turns []uint64 // one order per turn; nil: turn 0
		order [][]int
		inUse []bool
	}{
		// EnableFailover=yes.
		{name: "failover: the first server gets everything", rule: failover,
			cands: plain(Active, Active, Active), turns: []uint64{0, 1, 2},
			order: [][]int{{0, 1, 2}, {0, 1, 2}, {0, 1, 2}}, inUse: []bool{true, false, false}},
		{name: "failover: failed primary, the next in HCO order", rule: failover,
			cands: plain(Failed, Active, Active), order: [][]int{{1, 2, 0}}, inUse: []bool{false, true, false}},
		{name: "failover: disabled primary", rule: failover,
			cands: plain(Disabled, Active), order: [][]int{{1, 0}}, inUse: []bool{false, true}},
		{name: "failover: only the last one up", rule: failover,
			cands: plain(Failed, Disabled, Active), order: [][]int{{2, 0, 1}}, inUse: []bool{false, false, true}},
		{name: "failover: none up, the others in HCO order", rule: failover,
			cands: plain(Failed, Disabled), order: [][]int{{0, 1}}, inUse: []bool{false, false}},
		{name: "failover: latency does not matter", rule: failover,
			cands: cs(c{health: Active, ms: 90}, c{health: Active, ms: 1}), order: [][]int{{0, 1}}, inUse: []bool{true, false}},

		// EnableFailover=no.
		{name: "round robin: two alternate", rule: rr,
			cands: plain(Active, Active), turns: []uint64{0, 1, 2, 3},
			order: [][]int{{0, 1}, {1, 0}, {0, 1}, {1, 0}}, inUse: []bool{true, true}},
		{name: "round robin: three in turn", rule: rr,
			cands: plain(Active, Active, Active), turns: []uint64{0, 1, 2, 3},
			order: [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 1, 2}}, inUse: []bool{true, true, true}},
		{name: "round robin: one down is skipped, and tried last", rule: rr,
			cands: plain(Active, Failed, Active), turns: []uint64{0, 1, 2},
			order: [][]int{{0, 2, 1}, {2, 0, 1}, {0, 2, 1}}, inUse: []bool{true, false, true}},
		{name: "round robin: one up gets everything", rule: rr,
			cands: plain(Disabled, Active), turns: []uint64{0, 1},
			order: [][]int{{1, 0}, {1, 0}}, inUse: []bool{false, true}},
		{name: "round robin: none up", rule: rr,
			cands: plain(Failed, Failed), turns: []uint64{0, 1},
			order: [][]int{{0, 1}, {0, 1}}, inUse: []bool{false, false}},

		// Clusters: 60% of 3 needs 2 up.
		{name: "clusters 60%: first cluster whole, fastest first", rule: clusters(60),
			cands: cs(c{0, Active, 5}, c{0, Active, 2}, c{0, Active, 9}, c{1, Active, 1}, c{1, Active, 1}, c{1, Active, 1}),
			order: [][]int{{1, 0, 2, 3, 4, 5}}, inUse: []bool{true, true, true, false, false, false}},
		{name: "clusters 60%: 2 of 3 up is enough", rule: clusters(60),
			cands: cs(c{0, Failed, 0}, c{0, Active, 7}, c{0, Active, 3}, c{1, Active, 1}, c{1, Active, 1}, c{1, Active, 1}),
			order: [][]int{{2, 1, 3, 4, 5, 0}}, inUse: []bool{false, true, true, false, false, false}},
		{name: "clusters 60%: 1 of 3 up is below, the next cluster", rule: clusters(60),
			cands: cs(c{0, Failed, 0}, c{0, Disabled, 0}, c{0, Active, 1}, c{1, Active, 4}, c{1, Active, 2}, c{1, Failed, 0}),
			order: [][]int{{4, 3, 2, 0, 1, 5}}, inUse: []bool{false, false, false, true, true, false}},
		{name: "clusters 60%: all below, the first with a server up", rule: clusters(60),
			cands: cs(c{0, Failed, 0}, c{0, Failed, 0}, c{0, Active, 8}, c{1, Active, 1}, c{1, Failed, 0}, c{1, Failed, 0}),
			order: [][]int{{2, 3, 0, 1, 4, 5}}, inUse: []bool{false, false, true, false, false, false}},
		{name: "clusters 60%: all below, the first cluster has none up", rule: clusters(60),
			cands: cs(c{0, Failed, 0}, c{0, Failed, 0}, c{0, Failed, 0}, c{1, Active, 1}, c{1, Failed, 0}, c{1, Failed, 0}),
			order: [][]int{{3, 0, 1, 2, 4, 5}}, inUse: []bool{false, false, false, true, false, false}},
		{name: "clusters 60%: the third cluster, skipping two below", rule: clusters(60),
			cands: cs(c{0, Failed, 0}, c{0, Active, 1}, c{1, Disabled, 0}, c{1, Active, 1}, c{2, Active, 6}, c{2, Active, 6}),
			order: [][]int{{4, 5, 1, 3, 0, 2}}, inUse: []bool{false, false, false, false, true, true}},
		{name: "clusters: none up at all", rule: clusters(60),
			cands: cs(c{0, Failed, 0}, c{0, Disabled, 0}, c{1, Failed, 0}),
			order: [][]int{{0, 1, 2}}, inUse: []bool{false, false, false}},

		// Thresholds at their ends.
		{name: "clusters 0%: any server up keeps the cluster", rule: clusters(0),
			cands: cs(c{0, Failed, 0}, c{0, Failed, 0}, c{0, Active, 9}, c{1, Active, 1}),
			order: [][]int{{2, 3, 0, 1}}, inUse: []bool{false, false, true, false}},
		{name: "clusters 0%: a cluster with none up is not used", rule: clusters(0),
			cands: cs(c{0, Failed, 0}, c{0, Failed, 0}, c{1, Active, 1}),
			order: [][]int{{2, 0, 1}}, inUse: []bool{false, false, true}},
		{name: "clusters 100%: one down is below", rule: clusters(100),
			cands: cs(c{0, Active, 1}, c{0, Failed, 0}, c{1, Active, 3}, c{1, Active, 3}),
			order: [][]int{{2, 3, 0, 1}}, inUse: []bool{false, false, true, true}},
		{name: "clusters 100%: all up is enough", rule: clusters(100),
			cands: cs(c{0, Active, 4}, c{0, Active, 4}, c{1, Active, 1}),
			order: [][]int{{0, 1, 2}}, inUse: []bool{true, true, false}},

		// Latency inside a cluster.
		{name: "clusters: a server not measured yet comes first", rule: clusters(50),
			cands: cs(c{0, Active, 3}, c{0, Active, 0}, c{0, Active, 1}),
			order: [][]int{{1, 2, 0}}, inUse: []bool{true, true, true}},
		{name: "clusters: equal latencies keep HCO order; turns change nothing", rule: clusters(50),
			cands: cs(c{0, Active, 2}, c{0, Active, 2}), turns: []uint64{0, 1},
			order: [][]int{{0, 1}, {0, 1}}, inUse: []bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			turns := tt.turns
			if turns == nil {
				turns = []uint64{0}
			}
			for i, turn := range turns {
				if got := tt.rule.order(tt.cands, turn); !slices.Equal(got, tt.order[i]) {
					t.Errorf("turn %d: order = %v, want %v", turn, got, tt.order[i])
				}
			}
			if got := tt.rule.inUse(tt.cands); !slices.Equal(got, tt.inUse) {
				t.Errorf("inUse = %v, want %v", got, tt.inUse)
			}
		})
	}
}

func TestRuleFor(t *testing.T) {
	ps := conf.PolicyServer{Host: "smps1.shared.lab", AuthorizationPort: 44443}
	tests := []struct {
		name string
		hco  conf.HCO
		want rule
	}{
		{"failover", conf.HCO{EnableFailover: true, PolicyServers: []conf.PolicyServer{ps}}, rule{mode: modeFailover}},
		{"round robin", conf.HCO{EnableFailover: false, PolicyServers: []conf.PolicyServer{ps}}, rule{mode: modeRoundRobin}},
		{"clusters win over EnableFailover", conf.HCO{EnableFailover: true, FailoverThreshold: 60, PolicyServers: []conf.PolicyServer{ps},
			Clusters: [][]conf.PolicyServer{{ps}}}, rule{mode: modeClusters, threshold: 60}},
	}
	for _, tt := range tests {
		if got := ruleFor(tt.hco); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestRetrySafe(t *testing.T) {
	tests := []struct {
		req  *tlipb.Request
		want bool
	}{
		{isProtected("/"), true},
		{&tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_DoManagement{DoManagement: &tlipb.DoManagementRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_GetAgentConfig{GetAgentConfig: &tlipb.GetAgentConfigRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_SetAgentInfo{SetAgentInfo: &tlipb.SetAgentInfoRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_Logout{Logout: &tlipb.LogoutRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{}}}, false},
		{&tlipb.Request{Body: &tlipb.Request_RegisterHost{RegisterHost: &tlipb.RegisterHostRequest{}}}, false},
		{&tlipb.Request{}, false},
	}
	for _, tt := range tests {
		if got := retrySafe(tt.req); got != tt.want {
			t.Errorf("retrySafe(%T) = %v, want %v", tt.req.GetBody(), got, tt.want)
		}
	}
}

func TestResult(t *testing.T) {
	tests := []struct {
		err  error
		want tlipb.Result
	}{
		{nil, tlipb.Result_SUCCESS},
		{newError("x", nil, ErrTimeout), tlipb.Result_TIMEOUT},
		{newError("x", nil, ErrQueueFull, ErrNoConnection), tlipb.Result_NOCONNECTION},
		{fmt.Errorf("wrapped: %w", errClosed), tlipb.Result_NOCONNECTION},
		{errors.New("encoding"), tlipb.Result_FAILURE},
	}
	for _, tt := range tests {
		if got := Result(tt.err); got != tt.want {
			t.Errorf("Result(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Active: "Active", Inactive: "Inactive", Disabled: "Disabled", Failed: "Failed", State(7): "State(7)"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", int(s), s.String(), want)
		}
	}
}

func TestLikelyCause(t *testing.T) {
	timeout := newError("pool: IsProtected GET /x to smps1: no answer within RequestTimeout 1s", nil, ErrTimeout)
	tests := []struct {
		name string
		err  error
		want string // a part of the cause; "" for none
	}{
		{"none", nil, ""},
		{"unknown", errors.New("boom"), ""},
		{"timeout", timeout, "did not answer within RequestTimeout"},
		{"queue full", newError("pool: 300 requests already waiting", nil, ErrQueueFull, ErrNoConnection), "queue of requests is full"},
		{"closed before hello", fmt.Errorf("dial: %w", tli.ErrClosedBeforeHello), "connection limit"},
		{"limit in a handshake error", &tli.HandshakeError{Code: 3155, Message: "Connection request rejected. Connection limit of 2 exceeded."}, "connection limit"},
		{"refused", fmt.Errorf("dial tcp: %w", syscall.ECONNREFUSED), "not running"},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), "connection was reset"},
		{"bad secret", &tli.HandshakeError{Code: 3154, Message: "Shared secret incorrect"}, "registration"},
		{"the limit comes before a timeout on another server", errors.Join(timeout, tli.ErrClosedBeforeHello), "connection limit"},
		{"closed", errClosed, "shutting down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := LikelyCause(tt.err)
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("LikelyCause(%v) = %q, want it to say %q", tt.err, got, tt.want)
			}
			// LogCause: the same cause, as a field and as the message's end.
			var b bytes.Buffer
			l := zerolog.New(&b)
			ev := l.Warn()
			suffix := LogCause(ev, tt.err)
			ev.Msg("m")
			wantSuffix, wantField := "", false
			if got != "" {
				wantSuffix, wantField = ". Likely cause: "+got, true
			}
			if suffix != wantSuffix || strings.Contains(b.String(), `"cause":`) != wantField {
				t.Errorf("LogCause: suffix %q and record %s, want suffix %q (a cause field: %v)", suffix, b.String(), wantSuffix, wantField)
			}
		})
	}
}
