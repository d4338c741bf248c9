package pool

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// growRetryDelay is how long an Active server that refused a new socket is
// left to the sockets it has before the pool tries to grow again. Without
// it, every waiting request would dial at once into a server that is, say,
// at its connection limit. [our choice]
const growRetryDelay = time.Second

// outcome tells Do what a failed attempt on one server allows next.
type outcome int

const (
	done    outcome = iota // the server answered
	final                  // give the error to the caller as it is
	expired                // the request's context ended; Do names why
	unsent                 // nothing reached the server: any request may go elsewhere
	sent                   // the request may have reached the server: only safe ones go elsewhere
	bounced                // the server failed while the request waited for one of its sockets
)

type sockState uint8

const (
	sockIdle sockState = iota
	sockBusy
	sockGone // closed or reset, and out of server.socks
)

// socket is one session. Its number gives its age: 1 is the first socket
// opened to the server, and numbers are never reused, so "the same age or
// older" is num <= n.
type socket struct {
	num   int
	c     *tli.Client
	state sockState
	// closeOnReturn marks a busy socket that must carry no other request
	// (older than one that failed, or open before the server failed); it
	// is closed when its request is done, not under it.
	closeOnReturn bool
}

type grant struct {
	sock *socket
	how  outcome
	err  error
}

type waiter struct {
	ch   chan grant // buffered: whoever grants never blocks under the lock
	elem *list.Element
}

// healthChange is a change of a server's health that settle has not told
// yet, with why it happened.
type healthChange struct {
	to  State
	why string
}

// server is the pool of sockets to one Policy Server, and its queue.
type server struct {
	p       *Pool
	index   int
	cluster int // 0-based; 0 without clusters
	ps      conf.PolicyServer
	addr    string
	log     zerolog.Logger

	// shown is the state last told in the trace and the log, or
	// stateUntold; settle owns it (under Pool.smu).
	shown State

	mu sync.Mutex
	// health is what the sockets tell: Active (up), Disabled or Failed.
	// Whether an Active server gets new requests (the vendor's Active
	// or Inactive) is the selection's business: see settle.
	health  State
	changes []healthChange // since settle last ran
	// retriedBy says who opens the sockets of a server that is not up:
	// the health poll or a request with nowhere else to go. It names
	// the recovery in the trace.
	retriedBy string
	// latency is the EWMA of the time the server took to answer; 0 until
	// it has answered since it last came up.
	latency time.Duration
	closed  bool
	socks   []*socket // open sockets, oldest first
	opening int       // being dialed: they count toward MaxSocketsPerPort at once
	nextNum int
	waiters list.List // *waiter, first come first served
	lastErr error
	// growAfter holds growth back after a new socket failed (growRetryDelay).
	growAfter time.Time

	opened, requests, failures, resets, dialFailures int64
	maxQueued                                        int
	// steps counts the pool's steps of growth (growLocked).
	steps int
}

func newServer(p *Pool, index, cluster int, ps conf.PolicyServer) *server {
	s := &server{p: p, index: index, cluster: cluster, ps: ps, addr: ps.Addr(), health: Disabled, shown: stateUntold, nextNum: 1}
	s.log = p.log.With().Str("policy_server", s.addr).Logger()
	return s
}

// dial opens and handshakes one socket, for step when the pool grows. The
// handshake timeout bounds the TCP connect too: a server that drops SYNs
// must not hold a request for the system's connect timeout.
func (s *server) dial(ctx context.Context, phase string, step *trace.PoolStep) (*tli.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, s.p.handshakeTimeout)
	defer cancel()
	return tli.Dial(ctx, s.addr, tli.ClientConfig{
		TrustedHost: s.p.cfg.TrustedHost, Secret: s.p.cfg.Secret, HandshakeTimeout: s.p.handshakeTimeout,
		Recorder: s.p.cfg.Recorder, Dialer: s.p.cfg.Dialer, Phase: phase, PoolStep: step,
	})
}

// open adds up to n sockets, one after the other, as the agent opens its
// MinSocketsPerPort at start (the seed's capture shows 49269, then 49270).
// It stops at the first failure and reports it; the sockets opened so far
// stay.
func (s *server) open(ctx context.Context, n int, phase string) error {
	defer s.p.settle()
	for range n {
		s.mu.Lock()
		if s.closed || len(s.socks)+s.opening >= s.p.hco.MaxSocketsPerPort {
			s.mu.Unlock()
			return nil
		}
		num := s.nextNum
		s.nextNum++
		s.opening++
		s.mu.Unlock()

		c, err := s.dial(ctx, phase, nil)
		s.mu.Lock()
		s.opening--
		if err != nil {
			s.dialFailures++
			s.lastErr = err
			s.growLocked(phase) // a waiter may have counted on this socket
			s.mu.Unlock()
			return err
		}
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.addLocked(num, c)
		s.mu.Unlock()
	}
	return nil
}

// acquire hands out the lowest-numbered idle socket, so that the ACO goes
// over socket 1 and traffic keeps to the oldest sockets. With none idle the
// request waits in the queue; it grows the pool first if the sockets being
// opened would not be enough for everyone waiting.
//
// A request for a server that is not Active retries it: it waits for a new
// socket, since those from before the failure cannot be trusted.
func (s *server) acquire(ctx context.Context, phase string) (*socket, outcome, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, final, errClosed
	}
	var closing []*socket
	if s.health == Active {
		for _, k := range s.socks {
			if k.state == sockIdle {
				k.state = sockBusy
				s.mu.Unlock()
				return k, done, nil
			}
		}
	} else {
		closing = s.probeLocked("retried by a request")
	}
	// Waiters that a socket being opened will serve are not "queued" for
	// the limit: they would otherwise fail while the pool is still growing.
	maxSocks := s.p.hco.MaxSocketsPerPort
	if len(s.socks)+s.opening >= maxSocks && s.queuedLocked() >= s.p.maxQueue {
		n := s.queuedLocked()
		s.mu.Unlock()
		closeSockets(closing)
		return nil, final, newError(fmt.Sprintf("pool: %d requests already waiting for a socket to %s (MaxSocketsPerPort %d)", n, s.addr, maxSocks),
			nil, ErrQueueFull, ErrNoConnection)
	}
	w := &waiter{ch: make(chan grant, 1)}
	w.elem = s.waiters.PushBack(w)
	s.growLocked(phase)
	s.maxQueued = max(s.maxQueued, s.queuedLocked())
	s.mu.Unlock()
	closeSockets(closing)

	select {
	case g := <-w.ch:
		return g.sock, g.how, g.err
	case <-ctx.Done():
	}
	s.mu.Lock()
	if w.elem != nil {
		s.waiters.Remove(w.elem)
		w.elem = nil
		s.mu.Unlock()
		return nil, expired, ctx.Err()
	}
	s.mu.Unlock()
	// Granted while we gave up: pass the socket on rather than lose it.
	if g := <-w.ch; g.sock != nil {
		s.release(g.sock)
	}
	return nil, expired, ctx.Err()
}

// check is the health check of a server that is not Active: the sockets
// from before its failure go, and new ones are opened up to
// MinSocketsPerPort (at least one).
func (s *server) check(ctx context.Context, phase string) error {
	s.mu.Lock()
	if s.health == Active || s.closed {
		s.mu.Unlock()
		return nil
	}
	closing := s.probeLocked("health poll")
	n := max(1, s.p.hco.MinSocketsPerPort-len(s.socks))
	s.mu.Unlock()
	closeSockets(closing)
	return s.open(ctx, n, phase)
}

// sweep is the health poll of a server that is up: its idle sockets that
// the server has closed or reset (its idle timeout, or it went away) are
// closed on this side too and replaced, up to MinSocketsPerPort. A server
// that refuses the replacement with no socket left to it is Failed: that
// is how the poll finds a server that died while it took no request
// (a backup, a server of a cluster not in use), whose state the selection
// of clusters depends on.
func (s *server) sweep(ctx context.Context, phase string) error {
	s.mu.Lock()
	if s.health != Active || s.closed {
		s.mu.Unlock()
		return nil
	}
	var closing []*socket
	var gone error
	kept := s.socks[:0]
	for _, k := range s.socks {
		if k.state == sockIdle {
			if err := peerGone(k.c.Conn().Conn); err != nil {
				k.state = sockGone
				closing = append(closing, k)
				if gone == nil {
					gone = fmt.Errorf("socket %d was closed by the server while idle: %w", k.num, err)
				}
				continue
			}
		}
		kept = append(kept, k)
	}
	clear(s.socks[len(kept):])
	s.socks = kept
	n := s.p.hco.MinSocketsPerPort - len(s.socks) - s.opening
	s.mu.Unlock()
	closeSockets(closing)
	if gone == nil {
		return nil
	}
	s.log.Debug().Err(gone).Int("closed", len(closing)).Msg("Health poll: closed the sockets the server had closed")
	if n <= 0 {
		return nil
	}
	err := s.open(ctx, n, phase)
	if err == nil || ctx.Err() != nil {
		return nil
	}
	defer s.p.settle()
	s.mu.Lock()
	if s.health != Active || s.closed || s.usableLocked() {
		s.mu.Unlock()
		return nil
	}
	why := fmt.Sprintf("%v, and a new socket could not be opened: %v", gone, err)
	closing = s.failLocked(s.nextNum, why, fmt.Errorf("%w; new socket: %w", gone, err), unsent)
	s.mu.Unlock()
	closeSockets(closing)
	return fmt.Errorf("policy server %s failed: %s", s.addr, why)
}

// queuedLocked counts the requests that wait for a busy socket to come
// free: those that a socket being opened will serve are not in the queue.
func (s *server) queuedLocked() int { return max(0, s.waiters.Len()-s.opening) }

// probeLocked prepares the retry of a server that is not Active: the
// sockets that survived its failure (younger than the one that failed, as
// the vendor keeps them) may be dead too (a restarted server dropped them
// all), so none of them carries a request again. Idle ones are returned for
// closing, busy ones close when their request is done. The retry is a new
// socket, whose handshake tells whether the server is back; by names who
// asked, for the trace.
func (s *server) probeLocked(by string) []*socket {
	if s.health == Active {
		return nil
	}
	s.retriedBy = by
	return s.retireLocked(func(*socket) bool { return true })
}

// retireLocked takes the sockets that old says are past use out of
// service: the idle ones leave the pool and are returned for closing, the
// busy ones close when their request returns them.
func (s *server) retireLocked(old func(*socket) bool) []*socket {
	var closing []*socket
	kept := s.socks[:0]
	for _, k := range s.socks {
		if old(k) {
			if k.state == sockIdle {
				k.state = sockGone
				closing = append(closing, k)
				continue
			}
			k.closeOnReturn = true
		}
		kept = append(kept, k)
	}
	clear(s.socks[len(kept):])
	s.socks = kept
	return closing
}

// growLocked takes one step of the pool's growth: it opens NewSocketStep
// sockets at once (fewer near the maximum) when more requests wait than
// sockets are being opened. The new sockets count toward MaxSocketsPerPort
// before they are dialed, so that callers arriving together never open
// more than the maximum between them. A step does not wait for the one
// before to connect: under a burst of requests the steps follow each other
// within a few microseconds (2 to 4, 4 to 6, ...), each a batch of its own,
// which the trace (trace.PoolStep) and the log tell apart.
func (s *server) growLocked(phase string) {
	if s.closed || s.health == Active && time.Now().Before(s.growAfter) {
		return
	}
	need := s.waiters.Len() - s.opening
	room := s.p.hco.MaxSocketsPerPort - len(s.socks) - s.opening
	if need <= 0 || room <= 0 {
		return
	}
	n := min(s.p.hco.NewSocketStep, room)
	s.steps++
	from := len(s.socks) + s.opening
	step := &trace.PoolStep{N: s.steps, At: time.Now(), From: from, To: from + n, NewSocketStep: s.p.hco.NewSocketStep, MaxSocketsPerPort: s.p.hco.MaxSocketsPerPort}
	s.log.Info().Int("step", step.N).Int("from", step.From).Int("to", step.To).Int("waiting", s.waiters.Len()).
		Msgf("Requests wait for a socket to policy server %s: opening %d more (newsocketstep='%d'), from %d to %d sockets.",
			s.addr, n, s.p.hco.NewSocketStep, step.From, step.To)
	s.opening += n
	for range n {
		num := s.nextNum
		s.nextNum++
		s.p.dials.Add(1)
		go s.dialAsync(num, phase, step)
	}
}

// dialAsync opens a socket for the pool, not for the request that asked:
// it runs on the pool's lifetime, so a caller giving up does not waste a
// handshake, and Close stops it.
func (s *server) dialAsync(num int, phase string, step *trace.PoolStep) {
	defer s.p.dials.Done()
	defer s.p.settle()
	c, err := s.dial(s.p.life, phase, step)
	s.mu.Lock()
	s.opening--
	if err != nil {
		s.dialFailures++
		s.lastErr = err
		var closing []*socket
		switch {
		case s.closed:
		case s.health == Active && s.usableLocked():
			// A server that refuses more sockets (its connection limit)
			// still answers on those it has: the waiting requests wait
			// for them, within their RequestTimeout.
			s.growAfter = time.Now().Add(growRetryDelay)
			ev := s.log.Warn().Err(err).Int("socket", num).Int("open", len(s.socks))
			ev.Msgf("Could not open a new socket to policy server %s; its %d open sockets carry on%s", s.addr, len(s.socks), LogCause(ev, err))
		default:
			// Nothing left to wait for: the requests go elsewhere, and
			// they never reached this server.
			ev := s.log.Warn().Err(err).Int("socket", num)
			ev.Msgf("Could not open a socket to policy server %s; it is unavailable%s", s.addr, LogCause(ev, err))
			closing = s.failLocked(num, fmt.Sprintf("could not open socket %d: %v", num, err), err, unsent)
		}
		s.mu.Unlock()
		closeSockets(closing)
		return
	}
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.addLocked(num, c)
	s.mu.Unlock()
}

// addLocked puts a new socket in age order and gives it to the first waiter.
// A handshake that succeeded is proof enough that the server is up again.
func (s *server) addLocked(num int, c *tli.Client) {
	k := &socket{num: num, c: c}
	i, _ := slices.BinarySearchFunc(s.socks, num, func(a *socket, n int) int { return a.num - n })
	s.socks = slices.Insert(s.socks, i, k)
	s.opened++
	s.log.Debug().Int("socket", num).Int("open", len(s.socks)).Str("local", c.Conn().LocalAddr().String()).Msg("Opened socket")
	s.setHealthLocked(Active, fmt.Sprintf("socket %d connected (%s)", num, s.retriedBy))
	s.handLocked(k)
}

// setHealthLocked changes the server's health and keeps the change for
// settle to tell. Changes during Start are not kept: settle tells the
// state each server ends Start in.
func (s *server) setHealthLocked(to State, why string) {
	if s.health == to {
		return
	}
	s.health = to
	if to == Active {
		// Its response time from before is no guide to the server
		// that came back: it is measured again.
		s.latency = 0
	}
	if s.p.started.Load() {
		s.changes = append(s.changes, healthChange{to: to, why: why})
	}
}

func (s *server) handLocked(k *socket) {
	if e := s.waiters.Front(); e != nil {
		w := s.waiters.Remove(e).(*waiter)
		w.elem = nil
		k.state = sockBusy
		w.ch <- grant{sock: k, how: done}
		return
	}
	k.state = sockIdle
}

// release returns a socket after a request that left it in step with the
// server.
func (s *server) release(k *socket) {
	s.mu.Lock()
	if k.state == sockGone { // Close took it
		s.mu.Unlock()
		return
	}
	if s.closed || k.closeOnReturn {
		s.removeLocked(k)
		s.growLocked(s.p.defaultPhase)
		s.mu.Unlock()
		k.c.Close()
		return
	}
	s.handLocked(k)
	s.mu.Unlock()
}

// latencyWeight is the weight of the latest answer in a server's response
// time (an EWMA): about the last 5 answers count. [our choice]
const latencyWeight = 0.3

// answered counts a request the server answered in d and returns its
// socket. An answer does not make a Failed server Active: it may answer a
// request sent before the failure. Only a new socket does.
func (s *server) answered(k *socket, d time.Duration) {
	d = max(d, 1) // 0 means "not measured"
	s.mu.Lock()
	s.requests++
	if s.latency == 0 {
		s.latency = d
	} else {
		s.latency = time.Duration(latencyWeight*float64(d) + (1-latencyWeight)*float64(s.latency))
	}
	s.mu.Unlock()
	s.release(k)
}

// fail handles an error on a socket (why says it for the trace): the
// socket is reset (a late answer would otherwise answer the next request),
// the server becomes Failed, and the older sockets are closed.
func (s *server) fail(k *socket, why string, err error) {
	defer s.p.settle()
	k.c.Reset()
	s.mu.Lock()
	s.removeLocked(k)
	s.resets++
	s.failures++
	var closing []*socket
	if !s.closed {
		closing = s.failLocked(k.num, why, err, bounced)
		s.log.Warn().Err(err).Int("socket", k.num).Int("closed_older", len(closing)).Int("open", len(s.socks)).
			Msgf("Reset a socket to policy server %s after an error and closed %d older ones; the server is marked failed", s.addr, len(closing))
	}
	s.growLocked(s.p.defaultPhase)
	s.mu.Unlock()
	closeSockets(closing)
}

// drop ends a socket whose stream is out of step through no fault of the
// server (the caller gave up): reset it, and leave the others alone.
func (s *server) drop(k *socket) {
	s.mu.Lock()
	gone := k.state == sockGone
	if !gone {
		s.removeLocked(k)
		s.resets++
		s.growLocked(s.p.defaultPhase)
	}
	s.mu.Unlock()
	if !gone {
		k.c.Reset()
	}
}

// failLocked applies the vendor's rule to the sockets of the same age as
// socket num or older: the idle ones are returned for closing (FIN), the
// busy ones close when their request returns them. Younger sockets stay.
// The waiting requests leave with how: the selection decides again where
// they go now that this server is unavailable.
func (s *server) failLocked(num int, why string, err error, how outcome) []*socket {
	s.lastErr = err
	s.growAfter = time.Time{} // the retry of a failed server is a new socket
	if s.health == Active {
		s.setHealthLocked(Failed, why)
	}
	closing := s.retireLocked(func(k *socket) bool { return k.num <= num })
	for e := s.waiters.Front(); e != nil; e = s.waiters.Front() {
		w := s.waiters.Remove(e).(*waiter)
		w.elem = nil
		w.ch <- grant{how: how, err: fmt.Errorf("policy server %s failed while the request waited for a socket: %w", s.addr, err)}
	}
	return closing
}

// usableLocked tells whether some socket may still carry a request.
func (s *server) usableLocked() bool {
	for _, k := range s.socks {
		if !k.closeOnReturn {
			return true
		}
	}
	return false
}

func (s *server) removeLocked(k *socket) {
	k.state = sockGone
	if i := slices.Index(s.socks, k); i >= 0 {
		s.socks = slices.Delete(s.socks, i, i+1)
	}
}

// shut marks the server closed and hands back every socket, busy ones
// included: closing those is what makes Close prompt, as their requests
// then fail at once instead of waiting out RequestTimeout.
func (s *server) shut() []*socket {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for e := s.waiters.Front(); e != nil; e = s.waiters.Front() {
		w := s.waiters.Remove(e).(*waiter)
		w.elem = nil
		w.ch <- grant{how: final, err: errClosed}
	}
	closing := s.socks
	for _, k := range closing {
		k.state = sockGone
	}
	s.socks = nil
	return closing
}

func closeSockets(ks []*socket) {
	for _, k := range ks {
		k.c.Close()
	}
}

func (s *server) currentHealth() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

func (s *server) candidateLocked() candidate {
	return candidate{index: s.index, cluster: s.cluster, health: s.health, latency: s.latency}
}

func (s *server) candidate() candidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.candidateLocked()
}

func (s *server) stats() ServerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ServerStats{
		Addr: s.addr, State: s.health, Cluster: s.cluster + 1, ResponseTime: s.latency, Open: len(s.socks), Opening: s.opening,
		Queued: s.queuedLocked(), Waiting: s.waiters.Len(), MaxQueued: s.maxQueued,
		Opened: s.opened, DialFailures: s.dialFailures, Requests: s.requests, Failures: s.failures, Resets: s.resets,
	}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	for _, k := range s.socks {
		busy := k.state == sockBusy
		if busy {
			st.Busy++
		}
		tc := k.c.Conn()
		st.Sockets = append(st.Sockets, SocketStats{Num: k.num, Busy: busy, ConnID: tc.ID(), Local: tc.LocalAddr().String()})
	}
	return st
}
