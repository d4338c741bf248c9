package pool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/policyserver"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

const (
	trustedHost = "trust_wa1"
	agentHost   = "wa1.shared.lab"
	// wait bounds waits that normally end in milliseconds: long enough for
	// a loaded machine under -race, short enough that a hang fails.
	wait = 5 * time.Second
)

var secret = []byte("the pool tests' shared secret...")

// buf is an in-memory file for logs and traces written from many goroutines.
type buf struct{ testsupport.Buffer }

func (b *buf) events(t testing.TB) []trace.Event {
	t.Helper()
	evs, err := trace.ReadEvents("trace", bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// endpoint is a server's place in the lab: its name and where it listens.
type endpoint struct {
	name string
	ip   string
	port int
}

func (e endpoint) ps() conf.PolicyServer {
	return conf.PolicyServer{Host: e.name, AuthorizationPort: e.port}
}

func (e endpoint) addr() string { return e.name + ":" + strconv.Itoa(e.port) }

func (e endpoint) listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(e.ip, strconv.Itoa(e.port)))
	if err != nil {
		t.Fatalf("listen for %s: %v", e.name, err)
	}
	return ln
}

// lab gives each host of a test its own loopback address (127.77.n.x), so
// that each server is a host of its own in traces and no two tests share
// an address. Where loopback aliases are missing, every host is 127.0.0.1.
type lab struct {
	t       testing.TB
	prefix  string
	next    int
	aliased bool
	agentIP string
	hosts   map[string][]string
	log     *buf
	// untraced servers record nothing (benchmarks).
	untraced bool
}

var labSeq atomic.Int32

func newLab(t testing.TB) *lab {
	n := labSeq.Add(1)
	l := &lab{t: t, prefix: fmt.Sprintf("127.77.%d.", n%250+1), hosts: map[string][]string{}, log: &buf{}}
	if ln, err := net.Listen("tcp", l.prefix+"200:0"); err == nil {
		ln.Close()
		l.aliased = true
		l.agentIP = l.prefix + "200"
		l.hosts[l.agentIP] = []string{agentHost}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", l.log)
		}
	})
	return l
}

// host names a new host and opens a listener on its address.
func (l *lab) host(name string) (endpoint, net.Listener) {
	l.t.Helper()
	l.next++
	ip := "127.0.0.1"
	if l.aliased {
		ip = l.prefix + strconv.Itoa(l.next)
		l.hosts[ip] = []string{name}
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		l.t.Fatal(err)
	}
	ep := endpoint{name: name, ip: ip, port: ln.Addr().(*net.TCPAddr).Port}
	if !l.aliased {
		// One address for all: name each server's socket by its port.
		l.hosts[ln.Addr().String()] = []string{name}
	}
	return ep, ln
}

// down is a host with nothing listening: connecting is refused at once.
func (l *lab) down(name string) endpoint {
	ep, ln := l.host(name)
	ln.Close()
	return ep
}

func (l *lab) hostsMap() *trace.Hosts {
	l.t.Helper()
	h, err := trace.NewHosts(l.hosts)
	if err != nil {
		l.t.Fatal(err)
	}
	return h
}

func hcoFor(failover bool, eps ...endpoint) conf.HCO {
	h := conf.DefaultHCO()
	h.Name = "hco.test"
	h.EnableFailover = failover
	for _, e := range eps {
		h.PolicyServers = append(h.PolicyServers, e.ps())
	}
	return h
}

// config is the agent's side; the trace buffer records its sockets.
func (l *lab) config(hco conf.HCO) (Config, *buf) {
	tb := &buf{}
	rec := trace.NewRecorder(tb, trace.Options{Proc: "w3wp.exe", Role: "hla", Host: agentHost, Hosts: l.hostsMap()})
	cfg := Config{
		HCO: hco, TrustedHost: trustedHost, Secret: secret, Recorder: rec,
		HandshakeTimeout: wait, Log: zerolog.New(l.log).Level(zerolog.DebugLevel),
		// Off unless a test wants it: a poll in the middle of a test would
		// open sockets that its counts do not expect.
		HealthPollInterval: -1,
	}
	if l.aliased {
		cfg.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(l.agentIP)}}
	}
	return cfg, tb
}

var testInfo = AgentInfo{AgentName: "wa1", Info: "Product=agentlab,Platform=linux,Version=test", PID: os.Getpid(), Role: "hla"}

func (l *lab) start(cfg Config) (*Pool, conf.ACO) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, aco, err := Start(ctx, cfg, testInfo, "aco.wa1")
	if err != nil {
		l.t.Fatalf("Start: %v", err)
	}
	l.t.Cleanup(func() {
		if err := p.Close(); err != nil {
			l.t.Errorf("Close: %v", err)
		}
	})
	return p, aco
}

// realPS is a policyserver serving the seed store, trust_wa1 registered.
type realPS struct {
	ep     endpoint
	srv    *policyserver.Server
	trace  *buf
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (l *lab) realServer(name string) *realPS {
	ep, ln := l.host(name)
	return l.serveReal(ep, ln)
}

// serveReal runs a policyserver on ln; ln may be nil to listen on ep again
// (a server coming back up).
func (l *lab) serveReal(ep endpoint, ln net.Listener) *realPS {
	t := l.t
	t.Helper()
	if ln == nil {
		ln = ep.listen(t)
	}
	st, err := policyserver.SeedStore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RegisterHost(t.Context(), trustedHost, "hco.smps1", true, secret); err != nil {
		t.Fatal(err)
	}
	tb := &buf{}
	var rec *trace.Recorder
	if !l.untraced {
		rec = trace.NewRecorder(tb, trace.Options{Proc: "smps", Role: "policyserver", Host: ep.name, Hosts: l.hostsMap()})
	}
	srv, err := policyserver.New(policyserver.Config{Name: ep.name, Store: st, Recorder: rec, HandshakeTimeout: wait})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &realPS{ep: ep, srv: srv, trace: tb, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("%s: %v", ep.name, err)
		}
	})
	return r
}

func (r *realPS) stop() error {
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(2 * wait):
		return errors.New("Serve has not returned after the cancel")
	}
}

func (r *realPS) requests() int64 { return r.srv.Stats().Requests.Load() }

// verdict is what a fakePS does with a request.
type verdict int

const (
	answer    verdict = iota
	hold              // until release, then answer
	reset             // reset the connection instead of answering
	holdReset         // until release, then reset
)

// fakePS is a Policy Server reduced to what the pool tests need: it holds
// or resets requests on demand, and counts what the agent does.
type fakePS struct {
	ep     endpoint
	behave func(*tlipb.Request) verdict

	accepted, conns, maxConns, held, requests atomic.Int64
	// refuse closes new connections before the handshake, as a server
	// past its connection limit does.
	refuse atomic.Bool
	// mute keeps new connections open without a handshake, as a server too
	// busy to answer does.
	mute atomic.Bool
	// delay is how long the server thinks before each answer, as a slow
	// server of a cluster does.
	delay time.Duration

	mu     sync.Mutex
	gate   chan struct{}
	active map[net.Conn]struct{}

	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// byResource holds IsProtected for /hold..., resets it for /reset..., and
// does both for /hold-reset...
func byResource(req *tlipb.Request) verdict {
	r := req.GetIsProtected().GetResource()
	switch {
	case strings.HasPrefix(r, "/hold-reset"):
		return holdReset
	case strings.HasPrefix(r, "/hold"):
		return hold
	case strings.HasPrefix(r, "/reset"):
		return reset
	}
	return answer
}

func (l *lab) fakeServer(name string, behave func(*tlipb.Request) verdict) *fakePS {
	return l.slowServer(name, behave, 0)
}

// slowServer is a fakeServer that waits delay before each answer.
func (l *lab) slowServer(name string, behave func(*tlipb.Request) verdict, delay time.Duration) *fakePS {
	ep, ln := l.host(name)
	if behave == nil {
		behave = byResource
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakePS{ep: ep, behave: behave, delay: delay, gate: make(chan struct{}), active: map[net.Conn]struct{}{}, ln: ln, ctx: ctx, cancel: cancel}
	f.wg.Add(1)
	go f.serve()
	l.t.Cleanup(f.stop)
	return f
}

func (f *fakePS) stop() {
	f.cancel()
	f.ln.Close()
	f.mu.Lock()
	for c := range f.active {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// release answers every request held, and lets later ones through until
// rearm.
func (f *fakePS) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gate:
	default:
		close(f.gate)
	}
}

// rearm makes the server hold requests again.
func (f *fakePS) rearm() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gate:
		f.gate = make(chan struct{})
	default:
	}
}

func (f *fakePS) serve() {
	defer f.wg.Done()
	var rec *trace.Recorder // records nothing, but ServerHandshake wants a *trace.Conn
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if f.refuse.Load() {
			c.Close()
			continue
		}
		f.mu.Lock()
		if f.ctx.Err() != nil {
			f.mu.Unlock()
			c.Close()
			return
		}
		f.active[c] = struct{}{}
		f.mu.Unlock()
		f.accepted.Add(1)
		n := f.conns.Add(1)
		for m := f.maxConns.Load(); n > m && !f.maxConns.CompareAndSwap(m, n); m = f.maxConns.Load() {
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if f.mute.Load() {
				<-f.ctx.Done()
			}
			defer func() {
				f.mu.Lock()
				delete(f.active, c)
				f.mu.Unlock()
				f.conns.Add(-1)
				c.Close()
			}()
			f.handle(rec.Server(c, ""))
		}()
	}
}

func (f *fakePS) handle(tc *trace.Conn) {
	sc, err := tli.ServerHandshake(f.ctx, tc, tli.ServerConfig{
		Name: f.ep.name, HandshakeTimeout: wait,
		Secret: func(h string) ([]byte, bool) { return secret, h == trustedHost },
	})
	if err != nil {
		return
	}
	for {
		var req tlipb.Request
		if err := sc.ReadRequest(&req); err != nil {
			return
		}
		f.requests.Add(1)
		v := f.behave(&req)
		if v == hold || v == holdReset {
			f.mu.Lock()
			gate := f.gate
			f.mu.Unlock()
			f.held.Add(1)
			select {
			case <-gate:
				f.held.Add(-1)
			case <-f.ctx.Done():
				f.held.Add(-1)
				return
			}
		}
		if v == reset || v == holdReset {
			tc.Reset()
			return
		}
		if f.delay > 0 {
			select {
			case <-time.After(f.delay):
			case <-f.ctx.Done():
				return
			}
		}
		if err := sc.WriteResponse(&req, fakeAnswer(&req)); err != nil {
			return
		}
	}
}

func fakeAnswer(req *tlipb.Request) *tlipb.Response {
	switch b := req.Body.(type) {
	case *tlipb.Request_GetAgentConfig:
		aco := conf.DefaultACO()
		aco.Name, aco.DefaultAgentName = b.GetAgentConfig.GetName(), "wa1"
		aco.MaxResourceCacheSize, aco.MaxSessionCacheSize = 0, 0
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_AgentConfig{AgentConfig: aco.Proto()}}
	case *tlipb.Request_IsProtected:
		return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_IsProtected{IsProtected: &tlipb.IsProtectedResponse{Realm: "realm.fake", AuthScheme: "basic"}}}
	case *tlipb.Request_Authorize:
		return &tlipb.Response{Result: tlipb.Result_YES}
	}
	return &tlipb.Response{Result: tlipb.Result_SUCCESS}
}

func isProtected(resource string) *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{AgentName: "wa1", Resource: resource, Action: "GET"}}}
}

type result struct {
	resp *tlipb.Response
	err  error
}

// goDo runs Do on its own goroutine; receive from the channel with get.
func goDo(p *Pool, ctx context.Context, req *tlipb.Request) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := p.Do(ctx, req)
		ch <- result{resp, err}
	}()
	return ch
}

func get(t testing.TB, ch <-chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(2 * wait):
		t.Fatalf("%s: no answer after %s", what, 2*wait)
		return result{}
	}
}

func sockNums(ss ServerStats) []int {
	var out []int
	for _, k := range ss.Sockets {
		out = append(out, k.Num)
	}
	return out
}

// connEvents returns the trace's events on one connection, of the given ops.
func connEvents(evs []trace.Event, conn string, ops ...string) []trace.Event {
	var out []trace.Event
	for _, e := range evs {
		if e.Conn != conn {
			continue
		}
		for _, op := range ops {
			if e.Op == op {
				out = append(out, e)
			}
		}
	}
	return out
}

// stateNotes returns the notes of the trace's Server State events. An
// event whose State field says something else than its note shows as the
// two side by side, which no test expects: the field is what renderers
// read, the note what people read.
func stateNotes(evs []trace.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Op != trace.OpServerState {
			continue
		}
		var told string
		if st := e.State; st != nil {
			told = fmt.Sprintf("%s %s -> %s: %s", st.Server, st.From, st.To, st.Why)
			if st.From == "" {
				told = fmt.Sprintf("%s %s: %s", st.Server, st.To, st.Why)
			}
			if down := strings.HasPrefix(st.Why, "down at start: "); down != (st.Err != "") || down && st.Why != "down at start: "+st.Err {
				told += " [err " + st.Err + "]"
			}
		}
		if told != e.Note {
			out = append(out, fmt.Sprintf("note %q, state field %q", e.Note, told))
			continue
		}
		out = append(out, e.Note)
	}
	return out
}

// states gives each server's state, in HCO order.
func states(p *Pool) []State {
	var out []State
	for _, s := range p.Stats().Servers {
		out = append(out, s.State)
	}
	return out
}
