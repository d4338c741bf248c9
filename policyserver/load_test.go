package policyserver

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// traced makes runLiveServer record the server's trace into the returned
// log (one JSON event a line).
func traced(rec *liveLog) func(*Config) {
	return func(c *Config) {
		c.Recorder = trace.NewRecorder(rec, trace.Options{Proc: "smps", Role: "policyserver", Host: liveServerName})
	}
}

func events(t *testing.T, rec *liveLog, op string) []trace.Event {
	t.Helper()
	var out []trace.Event
	for line := range strings.SplitSeq(rec.String(), "\n") {
		if line == "" {
			continue
		}
		var e trace.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("trace line %q: %v", line, err)
		}
		if e.Op == op {
			out = append(out, e)
		}
	}
	return out
}

func liveLogin() *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{AgentName: "wa1", Realm: "realm.protected", User: "user1", Password: "wrong"}}}
}

// TestDirectoryInWorkers: Logins wait on the directory inside a worker
// thread, so with one thread they queue behind each other; IsProtected
// does not wait on it; slow-directory changes the latency at run time,
// fast-directory puts the store's back; the trace tells each wait.
func TestDirectoryInWorkers(t *testing.T) {
	const lat = 60 * time.Millisecond
	rec := &liveLog{}
	ls := runLiveServer(t, func(c *Config) {
		traced(rec)(c)
		c.Threads = 1
		c.Store.dir = Directory{Latency: lat, LoginLookups: 2, AuthorizeLookups: 1}
	})
	const n = 3
	clients := make([]*tli.Client, n)
	for i := range clients {
		clients[i] = ls.dial(t)
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			if _, err := liveDo(c, liveLogin()); err != nil {
				t.Errorf("Login: %v", err)
			}
		})
	}
	wg.Wait()
	start := time.Now()
	if err := livePingErr(clients[0]); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= lat {
		t.Errorf("IsProtected took %s, as long as a directory lookup (%s)", d, lat)
	}

	var waits []time.Duration
	for _, e := range events(t, rec, trace.OpResponse) {
		if e.Queue == nil || e.Queue.Threads != 1 || e.Queue.Bound != DefaultQueueBound {
			t.Fatalf("Response %q without the queue's state: %+v", e.Note, e.Queue)
		}
		switch e.Request {
		case trace.ReqLogin:
			if e.Queue.Directory < 2*lat {
				t.Errorf("Login waited %s on the directory, want 2 lookups of %s", e.Queue.Directory, lat)
			}
			waits = append(waits, e.Queue.Waited)
		case trace.ReqIsProtected:
			if e.Queue.Directory != 0 {
				t.Errorf("IsProtected waited %s on the directory", e.Queue.Directory)
			}
		}
	}
	// One thread: the last Login waited for the two before it.
	if len(waits) != n || waits[n-1] < 2*2*lat-10*time.Millisecond {
		t.Errorf("Logins waited %v in the queue, want the last about %s", waits, 4*lat)
	}
	depth := 0
	for _, e := range events(t, rec, trace.OpRequest) {
		if e.Queue == nil {
			t.Fatalf("Request %q without the queue's state", e.Note)
		}
		depth = max(depth, e.Queue.Depth)
	}
	if depth < 2 {
		t.Errorf("the queue was never deeper than %d with %d Logins on one thread", depth, n)
	}

	// slow-directory, then fast-directory.
	for _, c := range []struct {
		a    fault.Action
		want time.Duration
	}{
		{fault.Action{Kind: fault.SlowDirectory, Latency: 150 * time.Millisecond}, 300 * time.Millisecond},
		{fault.Action{Kind: fault.FastDirectory}, 2 * lat},
	} {
		res, err := ls.srv.Apply(c.a)
		if err != nil {
			t.Fatal(err)
		}
		if c.a.Kind == fault.SlowDirectory && res.State.DirectoryLatency != c.a.Latency {
			t.Errorf("%s: state %+v", c.a, res.State)
		}
		if _, err := liveDo(clients[0], liveLogin()); err != nil {
			t.Fatal(err)
		}
		// The wait a worker made, exact (no jitter), from the trace: the
		// wall clock of a loaded machine would say more.
		resps := events(t, rec, trace.OpResponse)
		if last := resps[len(resps)-1]; last.Request != trace.ReqLogin || last.Queue.Directory != c.want {
			t.Errorf("after %s a Login waited %s on the directory, want %s", c.a, last.Queue.Directory, c.want)
		}
	}
}

// TestFlushRequests: flushrequests answers every queued request with an
// error at once, and the server logs how many.
func TestFlushRequests(t *testing.T) {
	ls := runLiveServer(t, func(c *Config) {
		c.Threads = 1
		c.Store.dir = Directory{Latency: 2 * time.Second, LoginLookups: 1}
	})
	const n = 4
	results := make(chan *tlipb.Response, n)
	for range n {
		c := ls.dial(t)
		go func() {
			resp, err := liveDo(c, liveLogin())
			if err != nil {
				t.Errorf("Login: %v", err)
			}
			results <- resp
		}()
	}
	testsupport.WaitFor(t, liveWait, "3 Logins queued behind the first", func() bool { return ls.srv.Queue().Depth == n-1 })
	res, err := ls.srv.Apply(fault.Action{Kind: fault.FlushRequests})
	if err != nil || res.Flushed != n-1 {
		t.Fatalf("flushrequests: %+v, %v; want %d flushed", res, err, n-1)
	}
	for range n - 1 {
		select {
		case r := <-results:
			if r == nil || r.Result != tlipb.Result_FAILURE || !strings.Contains(r.Message, "flushrequests") {
				t.Errorf("flushed Login answered %v", r)
			}
		case <-time.After(time.Second):
			t.Fatal("a flushed request was not answered at once")
		}
	}
	ls.waitLog(t, "", "Flushed 3 requests from the request queue")
	<-results // the one a worker had taken, answered after its lookup
}

// TestLimitRecorded: a connection over --max-conns is refused at once,
// with the vendor's line in the log and in the trace (Event.Limit).
func TestLimitRecorded(t *testing.T) {
	rec := &liveLog{}
	ls := runLiveServer(t, func(c *Config) {
		traced(rec)(c)
		c.MaxConns = 1
	})
	ls.dial(t)
	start := time.Now()
	if _, err := ls.tryDial(ls.agentConfig()); err == nil {
		t.Fatal("a second connection got in past --max-conns 1")
	}
	if d := time.Since(start); d > liveWait/2 {
		t.Errorf("the refused client learnt after %s", d)
	}
	const msg = "Connection request rejected. Connection limit of 1 exceeded."
	if e := ls.waitLog(t, "", msg); e.num("max_conns") != 1 || e.str("message") != msg {
		t.Errorf("log entry %v", e)
	}
	var refused []trace.Event
	testsupport.WaitFor(t, liveWait, "the refusal in the trace", func() bool {
		refused = refused[:0]
		for _, e := range events(t, rec, trace.OpDisconnect) {
			if e.Limit != nil {
				refused = append(refused, e)
			}
		}
		return len(refused) > 0
	})
	if e := refused[0]; len(refused) != 1 || *e.Limit != (trace.ConnLimit{Max: 1, Message: msg}) || e.Note != msg || e.LocalHost != liveServerName {
		t.Errorf("refusals in the trace: %+v", refused)
	}
}

// TestMetrics scrapes /metrics, parses it with Prometheus's text parser
// and checks the counters against what the test did.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ls := runLiveServer(t, func(c *Config) {
		c.Metrics = reg
		c.MaxConns = 3
		c.Store.dir = Directory{LoginLookups: 2, AuthorizeLookups: 1}
	})
	addr, err := metrics.Serve(t.Context(), "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	a, b := ls.dial(t), ls.dial(t)
	for range 5 {
		if err := livePingErr(a); err != nil {
			t.Fatal(err)
		}
	}
	liveDo(b, liveLogin())
	liveDo(b, liveLogin())
	cfg := ls.agentConfig()
	cfg.Secret = []byte("not the secret")
	if _, err := ls.tryDial(cfg); err == nil {
		t.Fatal("a bad secret passed the handshake")
	}
	ls.waitLog(t, "", "Failed handshake")
	testsupport.WaitFor(t, liveWait, "the server to close the refused handshake", func() bool { return ls.srv.Conns() == 2 })
	c := ls.dial(t)                        // the third: at the limit
	if err := livePingErr(c); err != nil { // and past the handshake
		t.Fatal(err)
	}
	if _, err := ls.tryDial(ls.agentConfig()); err == nil {
		t.Fatal("a fourth connection got in past --max-conns 3")
	}
	ls.waitLog(t, "", "Connection request rejected")

	fams, err := metrics.Scrape(t.Context(), nil, fmt.Sprint(addr))
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels ...string) float64 {
		f, ok := fams[name]
		if !ok {
			t.Errorf("no %s among %d metric families", name, len(fams))
			return -1
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if label(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Errorf("no %s%v", name, labels)
		return -1
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{metrics.SmpsConnectionsOpen, nil, 3},
		{metrics.SmpsConnectionsAccepted, nil, 4}, // a, b, the bad secret, c
		{metrics.SmpsConnectionsRejected, nil, 1},
		{metrics.SmpsHandshakes, []string{metrics.LabelResult, HandshakeOK}, 3},
		{metrics.SmpsHandshakes, []string{metrics.LabelResult, "3154"}, 1},
		{metrics.SmpsRequests, []string{metrics.LabelType, trace.ReqIsProtected, metrics.LabelResult, "NO"}, 6},
		{metrics.SmpsRequests, []string{metrics.LabelType, trace.ReqLogin, metrics.LabelResult, "FAILURE"}, 2},
		{metrics.SmpsRequestSeconds, []string{metrics.LabelType, trace.ReqIsProtected}, 6},
		{metrics.SmpsDirectoryLookups, nil, 4},
		{metrics.SmpsQueueDepth, nil, 0},
		{metrics.SmpsThreads, nil, DefaultThreads},
		{metrics.SmpsThreadsBusy, nil, 0},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestQueueFull: past the queue's bound a request is answered at once
// with an error, and the server says why in its log and its trace.
func TestQueueFull(t *testing.T) {
	rec := &liveLog{}
	ls := runLiveServer(t, func(c *Config) {
		traced(rec)(c)
		c.Threads, c.QueueBound = 1, 1
		c.Store.dir = Directory{Latency: time.Second, LoginLookups: 1}
	})
	a, b, c := ls.dial(t), ls.dial(t), ls.dial(t)
	var wg sync.WaitGroup
	for _, cl := range []*tli.Client{a, b} {
		wg.Go(func() { liveDo(cl, liveLogin()) })
	}
	testsupport.WaitFor(t, liveWait, "one Login evaluated, one queued", func() bool { q := ls.srv.Queue(); return q.Busy == 1 && q.Depth == 1 })
	start := time.Now()
	resp, err := liveDo(c, livePing())
	if err != nil || resp.Result != tlipb.Result_FAILURE || resp.Message != "request queue full (1 waiting)" {
		t.Errorf("IsProtected past the bound: %v, %v", resp, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("the refused request was answered after %s", d)
	}
	ls.waitLog(t, "", "Request queue full (1 requests waiting for 1 worker threads): IsProtected GET / refused")
	wg.Wait()
	for _, e := range events(t, rec, trace.OpResponse) {
		if e.Request == trace.ReqIsProtected && (e.Result != "FAILURE" || *e.Queue != trace.QueueState{Depth: 1, Bound: 1, Busy: 1, Threads: 1}) {
			t.Errorf("refused IsProtected's Response: %s %+v", e.Result, e.Queue)
		}
	}
}
