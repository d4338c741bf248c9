package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// DefaultMaxQueue is the vendor's limit on requests waiting for a socket to
// one server once all MaxSocketsPerPort sockets are busy.
const DefaultMaxQueue = 300

// DefaultHealthPollInterval is how often the pool retries the servers that
// are not up: the vendor's agents find a recovered server "about every
// 30 s" (DOMAIN.md section 6).
const DefaultHealthPollInterval = 30 * time.Second

// Config is what an agent process builds its pools from, after bootstrap.
type Config struct {
	// HCO gives the servers, in order, and the socket parameters.
	HCO conf.HCO
	// TrustedHost and Secret are the agent host's registration (SmHost.conf);
	// every socket's handshake proves them.
	TrustedHost string
	Secret      []byte
	// Recorder traces every socket; nil records nothing. Its hosts map
	// also resolves the lab's server names.
	Recorder *trace.Recorder
	// Dialer sets the agent host's source address; nil dials from anywhere.
	Dialer *net.Dialer
	// HandshakeTimeout bounds each new socket, connect and handshake;
	// 0 means tli.DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxQueue is how many requests may wait for a socket to one server
	// when all its MaxSocketsPerPort sockets are busy; 0 means
	// DefaultMaxQueue, a negative value means none may wait.
	MaxQueue int
	// Log receives the pool's events; the zero Logger discards them.
	Log zerolog.Logger
	// SkipACO leaves GetAgentConfig out of Start (SetAgentInfo is still
	// sent): for an agent process that takes its ACO from its LLAWP, as
	// Apache children do in the vendor's documented setup. Start then
	// returns the zero ACO.
	SkipACO bool
	// HealthPollInterval is how often the pool runs its health poll
	// (CheckServers: retry the servers that are Disabled or Failed, and
	// replace the idle sockets the others have closed), from Start to
	// Close; 0 means DefaultHealthPollInterval, a negative value no poll
	// at all: a server then comes back only when a request finds no other
	// one up, or by a CheckServers of the caller's, as in older agents.
	HealthPollInterval time.Duration
}

// AgentInfo is what SetAgentInfo tells the server about this agent process.
type AgentInfo struct {
	AgentName string
	// Info is the vendor's instance string, e.g.
	// "Product=agentlab,Platform=linux,Version=0.1".
	Info string
	PID  int
	Role string // hla | llawp
}

// Pool holds an agent process's sockets to every server of its HCO and
// decides which server each request goes to. Its methods are safe for
// concurrent use.
type Pool struct {
	cfg     Config
	hco     conf.HCO
	log     zerolog.Logger
	servers []*server
	rule    rule
	// turn rotates round robin, one turn per request.
	turn atomic.Uint64
	// resendCount counts the requests sent again after RequestTimeout.
	resendCount atomic.Int64
	// calls counts what Do ended with (Stats.Calls).
	cmu              sync.Mutex
	calls            map[CallResult]int64
	maxQueue         int
	handshakeTimeout time.Duration
	// defaultPhase labels sockets opened when no request asked for them.
	defaultPhase string
	// started turns on the telling of state changes: during Start every
	// server becomes Active with its first socket, and that is no news;
	// settle then tells the state each server starts in.
	started atomic.Bool
	// smu orders settle: the trace tells state changes in one order.
	smu sync.Mutex

	// life outlives each request: sockets opened for a request serve the
	// pool after it. Close cancels it.
	life  context.Context
	stop  context.CancelFunc
	dials sync.WaitGroup
	// polls is the health poll goroutine.
	polls sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

var errClosed = newError("pool: closed", nil, ErrClosed, ErrNoConnection)

// Start is the agent's HCO phase (DOMAIN.md section 3): it opens
// MinSocketsPerPort sockets to every server of the HCO (every server of
// every cluster, when the HCO lists clusters), in HCO order and one after
// the other, each with its own handshake; then it sends SetAgentInfo and
// fetches the ACO named acoName over the first socket of the first server
// that is up (unless cfg.SkipACO). A server that is down is skipped and
// Disabled (the health poll and later requests retry it); if none can be
// reached the error names each one and why. Once the servers are tried,
// the trace tells the state each one starts in (trace.OpServerState).
//
// ctx bounds the start only; the pool, and its health poll, live until
// Close.
func Start(ctx context.Context, cfg Config, info AgentInfo, acoName string) (*Pool, conf.ACO, error) {
	p, err := newPool(ctx, cfg)
	if err != nil {
		return nil, conf.ACO{}, err
	}
	var down []string
	for _, s := range p.servers {
		err := s.open(ctx, p.hco.MinSocketsPerPort, trace.PhaseHCO)
		open := s.stats().Open
		switch {
		case err == nil:
			s.log.Info().Int("sockets", open).Msgf("Connected to policy server %s with %d sockets.", s.addr, open)
		case open == 0:
			s.log.Warn().Err(err).Msgf("Policy server %s unavailable at start: disabled until it answers", s.addr)
			down = append(down, fmt.Sprintf("  %s: %v", s.addr, err))
		default:
			s.log.Warn().Err(err).Int("sockets", open).Int("min_sockets_per_port", p.hco.MinSocketsPerPort).
				Msgf("Opened %d sockets to policy server %s, fewer than minsocketsperport='%d'", open, s.addr, p.hco.MinSocketsPerPort)
		}
		if ctx.Err() != nil {
			p.Close()
			return nil, conf.ACO{}, fmt.Errorf("pool: start canceled: %w", ctx.Err())
		}
	}
	if len(down) == len(p.servers) {
		p.Close()
		return nil, conf.ACO{}, newError(fmt.Sprintf("pool: trusted host %q could not connect to any policy server of HCO %q:\n%s",
			cfg.TrustedHost, p.hco.Name, strings.Join(down, "\n")), nil, ErrNoConnection)
	}
	p.started.Store(true)
	p.settle()
	aco, err := p.fetchACO(ctx, info, acoName)
	if err != nil {
		p.Close()
		return nil, conf.ACO{}, err
	}
	if every := p.healthPollInterval(); every > 0 {
		p.polls.Add(1)
		go p.healthPoll(every)
	}
	return p, aco, nil
}

func newPool(ctx context.Context, cfg Config) (*Pool, error) {
	hco := cfg.HCO
	if err := hco.Validate(); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	if cfg.TrustedHost == "" {
		return nil, errors.New("pool: no trusted host name")
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("pool: no shared secret")
	}
	p := &Pool{cfg: cfg, hco: hco, log: cfg.Log, rule: ruleFor(hco), defaultPhase: trace.PhaseRequests, calls: map[CallResult]int64{}}
	switch {
	case cfg.MaxQueue == 0:
		p.maxQueue = DefaultMaxQueue
	case cfg.MaxQueue > 0:
		p.maxQueue = cfg.MaxQueue
	}
	p.handshakeTimeout = cfg.HandshakeTimeout
	if p.handshakeTimeout <= 0 {
		p.handshakeTimeout = tli.DefaultHandshakeTimeout
	}
	p.life, p.stop = context.WithCancel(context.WithoutCancel(ctx))
	if len(hco.Clusters) == 0 {
		for i, ps := range hco.PolicyServers {
			p.servers = append(p.servers, newServer(p, i, 0, ps))
		}
		return p, nil
	}
	// Clusters win over PolicyServer entries (DOMAIN.md section 6): the
	// vendor's documentation says those are then not used at all.
	if len(hco.PolicyServers) > 0 {
		p.log.Info().Int("clusters", len(hco.Clusters)).Int("policy_servers", len(hco.PolicyServers)).
			Msg("The HCO lists clusters: its PolicyServer entries are not used")
	}
	for c, cluster := range hco.Clusters {
		for _, ps := range cluster {
			p.servers = append(p.servers, newServer(p, len(p.servers), c, ps))
		}
	}
	return p, nil
}

func (p *Pool) healthPollInterval() time.Duration {
	if p.cfg.HealthPollInterval == 0 {
		return DefaultHealthPollInterval
	}
	return p.cfg.HealthPollInterval
}

// healthPoll runs CheckServers every interval until Close. A server that
// answers becomes up again (settle tells it); one that does not stays as
// it is, quietly: its state change was told when it went down.
func (p *Pool) healthPoll(every time.Duration) {
	defer p.polls.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.life.Done():
			return
		case <-t.C:
		}
		if err := p.CheckServers(p.life); err != nil && p.life.Err() == nil {
			p.log.Debug().Err(err).Msg("Health poll: policy servers still unavailable")
		}
	}
}

// fetchACO asks the first server that is up, then the next if that one
// fails under the request: the ACO is needed before anything else works.
func (p *Pool) fetchACO(ctx context.Context, info AgentInfo, acoName string) (conf.ACO, error) {
	var errs []string
	for _, s := range p.servers {
		if !s.currentHealth().up() {
			continue
		}
		aco, how, err := p.hello(ctx, s, info, acoName)
		if err == nil {
			return aco, nil
		}
		if how == final {
			return conf.ACO{}, err
		}
		errs = append(errs, "  "+err.Error())
	}
	return conf.ACO{}, newError(fmt.Sprintf("pool: no policy server of HCO %q gave agent configuration object %q:\n%s",
		p.hco.Name, acoName, strings.Join(errs, "\n")), nil, ErrNoConnection)
}

func (p *Pool) hello(ctx context.Context, s *server, info AgentInfo, acoName string) (conf.ACO, outcome, error) {
	resp, how, err := p.once(ctx, s, &tlipb.Request{Body: &tlipb.Request_SetAgentInfo{SetAgentInfo: &tlipb.SetAgentInfoRequest{
		AgentName: info.AgentName, Info: info.Info, Pid: uint32(info.PID), Role: info.Role,
	}}})
	if err != nil {
		return conf.ACO{}, how, err
	}
	if resp.GetResult() != tlipb.Result_SUCCESS {
		// Informational for the server: an agent that cannot tell it its
		// version still works.
		s.log.Warn().Str("result", resp.GetResult().String()).Str("message", resp.GetMessage()).
			Msgf("Policy server %s refused SetAgentInfo: %s %s", s.addr, resp.GetResult(), resp.GetMessage())
	}
	if p.cfg.SkipACO {
		return conf.ACO{}, done, nil
	}
	resp, how, err = p.once(ctx, s, &tlipb.Request{Body: &tlipb.Request_GetAgentConfig{GetAgentConfig: &tlipb.GetAgentConfigRequest{Name: acoName}}})
	if err != nil {
		return conf.ACO{}, how, err
	}
	if resp.GetResult() != tlipb.Result_SUCCESS || resp.GetAgentConfig() == nil {
		return conf.ACO{}, final, fmt.Errorf("pool: policy server %s did not give agent configuration object %q: %s %s",
			s.addr, acoName, resp.GetResult(), resp.GetMessage())
	}
	aco, err := conf.ACOFromProto(resp.GetAgentConfig())
	if err != nil {
		return conf.ACO{}, final, fmt.Errorf("pool: agent configuration object %q from %s is unusable: %w", acoName, s.addr, err)
	}
	s.log.Info().Str("aco", aco.Name).Msgf("Agent configuration object '%s' received from policy server %s.", aco.Name, s.addr)
	return aco, done, nil
}

func (p *Pool) once(ctx context.Context, s *server, req *tlipb.Request) (*tlipb.Response, outcome, error) {
	return p.exchange(p.newCall(ctx, req, trace.PhaseHCO), s)
}

// Do sends req to a Policy Server and returns its response; the Agent API
// code is the response's Result. It sets req.Id, so a request must not be
// shared between concurrent calls.
//
// The server is the selection's first choice (pool/doc.go). The HCO's
// RequestTimeout bounds each try on one server, the wait for a socket
// included; ctx may end the call sooner, and CallTimeout is the longest
// it can take. An error says why with one of the sentinels (ErrTimeout,
// ErrNoConnection, ErrQueueFull, ErrClosed).
//
// When a server fails under the request (its socket breaks, or no answer
// comes within RequestTimeout), the server is marked Failed and a request
// that is safe to repeat (IsProtected, Authorize, DoManagement,
// GetAgentConfig, SetAgentInfo, Logout, GetHostConfig) goes to the next
// choice, each server once at most. Any request that never left the agent
// (no socket could be opened, its socket was found closed by the server
// before the request was written, or the server failed while it queued)
// goes on to the next choice too, a Login included; a Login that was
// written is never sent again. A safe request that got no answer within
// RequestTimeout is sent again on a new connection, MaxResends times at
// most, to the same server when no other is up.
func (p *Pool) Do(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error) {
	if req == nil {
		return nil, errors.New("pool: nil request")
	}
	if !p.enter() {
		return nil, newError("pool: "+tli.Describe(req)+": the pool is closed", nil, ErrClosed, ErrNoConnection)
	}
	defer p.inflight.Done()
	phase := trace.PhaseRequests
	if req.GetDoManagement() != nil {
		phase = trace.PhaseManagement
	}
	resp, err := p.route(p.newCall(ctx, req, phase))
	result := Result(err)
	if err == nil {
		result = resp.GetResult()
	}
	p.cmu.Lock()
	p.calls[CallResult{Call: tli.Call(req), Result: result.String()}]++
	p.cmu.Unlock()
	return resp, err
}

// MaxResends is how many times a request that got no answer within
// RequestTimeout is sent again, each time on a new connection: to the
// next server the selection gives, or, when no other server is up, to the
// same server on a socket opened after the one that timed out (the
// timed-out server is Failed, and a request for a server that is not up
// waits for a new socket). The vendor's documents say that the agent
// sends again on a new connection, not how often; two resends, three
// tries in all, is [our choice]: enough for the snowball of a slow
// server (DOMAIN.md section 9), bounded so that a page load ends. A Login
// is never sent again once written (retrySafe).
const MaxResends = 2

// maxBounces bounds how often one request may be sent back to the selection
// by servers failing under other requests while it queued.
const maxBounces = 3

// CallTimeout is the longest a Do can take when its context has no
// deadline: RequestTimeout for each try, and a request tries each server
// once at most, plus its resends after a timeout (MaxResends) and the
// times it may be sent back to the selection (maxBounces, and the one
// that ends it). An agent that wants a bound of
// its own on top of the pool's should not make it shorter, or a request
// would not live to see its retry on the next server.
func (p *Pool) CallTimeout() time.Duration {
	return p.hco.RequestTimeout.D() * time.Duration(len(p.servers)+maxBounces+MaxResends+1)
}

func (p *Pool) route(c *call) (*tlipb.Response, error) {
	tried := make([]bool, len(p.servers))
	// One turn per request: its retries follow the same rotation.
	turn := p.turn.Add(1) - 1
	var errs []error
	bounces := 0
	for {
		s := p.pick(tried, turn)
		if s == nil {
			break
		}
		resp, how, err := p.exchange(c, s)
		switch how {
		case done:
			return resp, nil
		case bounced:
			// Not a try of that server: it failed under someone else, and
			// may still be the only one left to try.
			if bounces++; bounces > maxBounces {
				return nil, err
			}
		case unsent:
			tried[s.index] = true
		case sent:
			if c.resends < MaxResends && retrySafe(c.req) && errors.Is(err, ErrTimeout) {
				// No answer within RequestTimeout: send it again on a new
				// connection. The server is not marked tried, so that
				// with no other server up the resend goes to it again,
				// on a socket opened after the one that timed out.
				c.resends++
				p.resendCount.Add(1)
				break
			}
			tried[s.index] = true
			if !retrySafe(c.req) {
				return nil, err
			}
		default:
			return nil, err
		}
		errs = append(errs, err)
		p.log.Debug().Err(err).Str("request", tli.Describe(c.req)).Msg("Trying the next policy server")
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, newError(fmt.Sprintf("pool: %s: no policy server could answer", tli.Describe(c.req)), errors.Join(errs...), ErrNoConnection)
}

// retrySafe lists the requests a server may see twice without harm. A Login
// is not one of them: it may have opened a session on the first server.
func retrySafe(req *tlipb.Request) bool {
	switch req.GetBody().(type) {
	case *tlipb.Request_IsProtected, *tlipb.Request_Authorize, *tlipb.Request_DoManagement,
		*tlipb.Request_GetAgentConfig, *tlipb.Request_SetAgentInfo, *tlipb.Request_Logout,
		*tlipb.Request_GetHostConfig:
		return true
	}
	return false
}

// candidates is what the selection needs of every server now.
func (p *Pool) candidates() []candidate {
	cands := make([]candidate, len(p.servers))
	for i, s := range p.servers {
		cands[i] = s.candidate()
	}
	return cands
}

func (p *Pool) pick(tried []bool, turn uint64) *server {
	for _, i := range p.rule.order(p.candidates(), turn) {
		if !tried[i] {
			return p.servers[i]
		}
	}
	return nil
}

// call is one request's journey through the pool, over one or more
// servers.
type call struct {
	ctx   context.Context // the caller's
	req   *tlipb.Request
	phase string
	limit time.Duration // RequestTimeout, for each try
	// resends counts the times the request was sent again after
	// RequestTimeout (MaxResends); the trace's Request event carries it.
	resends int
}

func (p *Pool) newCall(ctx context.Context, req *tlipb.Request, phase string) *call {
	return &call{ctx: ctx, req: req, phase: phase, limit: p.hco.RequestTimeout.D()}
}

// try is one attempt of a call on one server, bounded by RequestTimeout
// or by the caller's earlier deadline.
type try struct {
	ctx      context.Context
	cancel   context.CancelFunc
	deadline time.Time
	// ours tells RequestTimeout (the server's fault) from a shorter
	// deadline of the caller's (nobody's fault but the caller's).
	ours bool
}

func (c *call) begin() *try {
	t := &try{deadline: time.Now().Add(c.limit), ours: true}
	if dl, ok := c.ctx.Deadline(); ok && dl.Before(t.deadline) {
		t.deadline, t.ours = dl, false
	}
	t.ctx, t.cancel = context.WithDeadline(c.ctx, t.deadline)
	return t
}

// ended tells whether the try's time is up. The socket's deadline is the
// context's, and its timer may fire a moment before the context's own.
func (t *try) ended() bool {
	return t.ctx.Err() != nil || !time.Now().Before(t.deadline)
}

// timedOut tells whether the try ended by RequestTimeout while the caller
// still waits: the one end that blames the server and lets the call go on.
func (c *call) timedOut(t *try) bool {
	return t.ours && c.ctx.Err() == nil
}

func (c *call) head(s *server) string {
	return fmt.Sprintf("pool: %s to %s", tli.Describe(c.req), s.addr)
}

// endErr names why a try whose time is up ended, where.
func (c *call) endErr(t *try, s *server, where string, cause error) error {
	switch {
	case errors.Is(c.ctx.Err(), context.Canceled):
		return newError(c.head(s)+": canceled by the caller "+where, cause, context.Canceled)
	case t.ours:
		return newError(fmt.Sprintf("%s: no answer within RequestTimeout %s %s", c.head(s), seconds(c.limit), where), cause, ErrTimeout, context.DeadlineExceeded)
	}
	return newError(c.head(s)+": the caller's deadline passed "+where, cause, ErrTimeout, context.DeadlineExceeded)
}

// seconds writes a timeout as the vendor's objects give it, in seconds.
func seconds(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// exchange runs one try of a request on server s, and sorts out the socket
// and the server's state when it fails.
func (p *Pool) exchange(c *call, s *server) (*tlipb.Response, outcome, error) {
	t := c.begin()
	defer t.cancel()
	k, how, err := s.acquire(t.ctx, c.phase)
	switch how {
	case done:
	case expired:
		err := c.endErr(t, s, "while waiting for a socket", nil)
		if c.timedOut(t) {
			// Nothing was sent, and the server is not to blame for a
			// queue: the request may go elsewhere.
			return nil, unsent, err
		}
		return nil, final, err
	case unsent, bounced:
		return nil, how, newError(c.head(s), err, ErrNoConnection)
	default:
		if errors.Is(err, ErrClosed) {
			err = newError(c.head(s)+": the pool is closed", nil, ErrClosed, ErrNoConnection)
		}
		return nil, how, err
	}
	if !retrySafe(c.req) {
		// A request that must not be sent twice is sent only on a socket
		// the server has not already closed: a server that was stopped
		// or killed leaves the agent idle sockets that would take the
		// request and lose it.
		if gone := peerGone(k.c.Conn().Conn); gone != nil {
			err := fmt.Errorf("socket %d was closed by the server while idle: %w", k.num, gone)
			s.fail(k, err.Error(), err)
			return nil, unsent, newError(c.head(s)+": not sent", err, ErrNoConnection)
		}
	}
	k.c.Conn().SetPhase(c.phase)
	began := time.Now()
	resp, err := k.c.Resend(t.ctx, c.req, c.resends)
	if err == nil {
		s.answered(k, time.Since(began))
		return resp, done, nil
	}
	switch {
	case errors.Is(err, tli.ErrBroken):
		// Broken before this request, which therefore never left.
		s.drop(k)
		return nil, unsent, newError(c.head(s), err, ErrNoConnection)
	case k.c.Err() == nil:
		// Refused before sending (too large, or the time was already up):
		// the socket is still in step with the server.
		s.release(k)
		if t.ended() {
			return nil, final, c.endErr(t, s, "before sending", err)
		}
		return nil, final, newError(c.head(s), err)
	case p.isClosed():
		s.drop(k)
		return nil, final, newError(c.head(s)+": the pool was closed", err, ErrClosed, ErrNoConnection)
	case t.ended():
		// A late answer would answer the next request on this socket:
		// it is reset either way. Only RequestTimeout blames the server,
		// and then the request may go on to the next one.
		where := fmt.Sprintf("(socket %d reset)", k.num)
		if c.timedOut(t) {
			// The vendor's way: an RST, and the trace says it was the
			// RequestTimeout (fail's own reset then finds it closed).
			k.c.ResetTimedOut(c.limit, tli.Call(c.req))
			why := "no answer within RequestTimeout " + seconds(c.limit)
			s.fail(k, why, fmt.Errorf("%s: %w", why, err))
			return nil, sent, c.endErr(t, s, where, err)
		}
		s.drop(k)
		return nil, final, c.endErr(t, s, where, err)
	}
	s.fail(k, fmt.Sprintf("socket %d: %v", k.num, err), err)
	return nil, sent, newError(fmt.Sprintf("%s: socket %d failed", c.head(s), k.num), err, ErrNoConnection)
}

func (p *Pool) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.inflight.Add(1)
	return true
}

func (p *Pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// CheckServers is the agent's health poll (Start runs it every
// HealthPollInterval). It tries to open a socket to every server that is
// Disabled or Failed, topping it up to MinSocketsPerPort; a server that
// accepts one is up again, Active or Inactive as the selection then says
// (with EnableFailover=yes it takes the new requests back if it comes
// first in the HCO). On a server that is up it closes the idle sockets
// the server has closed and tops it up to MinSocketsPerPort again; one
// that then refuses them all is Failed. The error lists the servers still
// unavailable and those found failed.
func (p *Pool) CheckServers(ctx context.Context) error {
	if !p.enter() {
		return errClosed
	}
	defer p.inflight.Done()
	// Close waits for this call: it must not wait out a handshake timeout.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.life, cancel)()
	errs := make([]error, len(p.servers))
	var wg sync.WaitGroup
	for i, s := range p.servers {
		state := s.currentHealth()
		if state.up() {
			wg.Go(func() { errs[i] = s.sweep(ctx, p.defaultPhase) })
			continue
		}
		wg.Go(func() {
			if err := s.check(ctx, p.defaultPhase); err != nil {
				errs[i] = fmt.Errorf("policy server %s is still %s: %w", s.addr, state, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops the health poll and ends every socket with a FIN, busy ones
// included so that their requests fail at once rather than wait out
// RequestTimeout, then waits for those requests, for sockets being opened
// and for the health poll to return. Requests waiting for a socket fail
// with ErrClosed. Close may be called more than once.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.stop()
	var errs []error
	for _, s := range p.servers {
		for _, k := range s.shut() {
			if err := k.c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, fmt.Errorf("pool: closing socket %d to %s: %w", k.num, s.addr, err))
			}
		}
	}
	p.inflight.Wait()
	p.dials.Wait()
	p.polls.Wait()
	return errors.Join(errs...)
}

// Stats is a snapshot of the pool.
type Stats struct {
	Servers []ServerStats // in HCO order (with clusters: cluster by cluster)
	// Queued is the number of requests waiting for a busy socket to come
	// free, all servers (ServerStats.Queued).
	Queued int
	// MaxQueued is the longest any server's queue has been.
	MaxQueued int
	// Resends counts the requests sent again, on a new connection, after
	// RequestTimeout (MaxResends).
	Resends int64
	// Calls counts the requests Do ended, by call (a trace Req constant)
	// and the Agent API result the caller got (Result for an error).
	Calls map[CallResult]int64
}

// CallResult is a key of Stats.Calls.
type CallResult struct {
	Call   string // trace.ReqIsProtected, ...
	Result string // tlipb.Result's name: YES, NO, TIMEOUT, NOCONNECTION, ...
}

// ServerStats describes the sockets to one server.
type ServerStats struct {
	Addr string // host:port, as the HCO names it
	// State is the vendor's: Active, Inactive, Disabled or Failed, as the
	// selection sees it now.
	State State
	// Cluster is the server's cluster, 1 for the HCO's first; 0 when the
	// HCO lists no clusters.
	Cluster int
	// ResponseTime is the recent time the server took to answer (an EWMA,
	// what clusters choose by); 0 until it has answered since it last
	// came up.
	ResponseTime time.Duration
	// Open sockets, of which Busy carry a request; Opening are being
	// dialed and already count toward MaxSocketsPerPort.
	Open, Busy, Opening int
	// Queued requests wait for a busy socket to come free, and count
	// toward MaxQueue; MaxQueued is the most there were. Waiting adds the
	// requests that wait for a socket being opened.
	Queued, Waiting, MaxQueued int
	// Opened counts the sockets ever opened (handshake done), DialFailures
	// those that could not be.
	Opened, DialFailures int64
	// Requests counts the requests the server answered; Failures those
	// that broke a socket or timed out; Resets the sockets reset.
	Requests, Failures, Resets int64
	LastError                  string
	Sockets                    []SocketStats // oldest first
}

// SocketStats describes one open socket.
type SocketStats struct {
	Num    int    // 1 for the first socket ever opened to the server, and so on
	Busy   bool   // carries a request
	ConnID string // the trace's connection id ("" without a Recorder)
	Local  string // local address, as a capture shows it
}

// Stats returns a snapshot of every server's sockets and queue.
func (p *Pool) Stats() Stats {
	var st Stats
	cands := make([]candidate, len(p.servers))
	for i, s := range p.servers {
		ss := s.stats()
		cands[i] = candidate{index: i, cluster: s.cluster, health: ss.State, latency: ss.ResponseTime}
		if len(p.hco.Clusters) == 0 {
			ss.Cluster = 0
		}
		st.Servers = append(st.Servers, ss)
		st.Queued += ss.Queued
		st.MaxQueued = max(st.MaxQueued, ss.MaxQueued)
	}
	st.Resends = p.resendCount.Load()
	p.cmu.Lock()
	st.Calls = maps.Clone(p.calls)
	p.cmu.Unlock()
	for i, in := range p.rule.inUse(cands) {
		if cands[i].health.up() && !in {
			st.Servers[i].State = Inactive
		}
	}
	return st
}
