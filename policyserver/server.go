package policyserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/backoff"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// Server defaults, from the vendor's documentation (DOMAIN.md section 5).
const (
	DefaultMaxConns    = 256
	DefaultIdleTimeout = 10 * time.Minute
	DefaultMaxLifetime = 360 * time.Minute
)

// Config is what a Policy Server process runs with.
type Config struct {
	Name             string // this server's host name, e.g. smps1.shared.lab
	Store            *Store
	MaxConns         int           // 0: DefaultMaxConns
	Threads          int           // worker threads (Maximum Threads); 0: DefaultThreads
	QueueBound       int           // requests that may wait for a thread; 0: DefaultQueueBound
	IdleTimeout      time.Duration // 0: DefaultIdleTimeout
	MaxLifetime      time.Duration // 0: DefaultMaxLifetime (AgentConnectionMaxLifetime)
	HandshakeTimeout time.Duration // 0: tli.DefaultHandshakeTimeout
	Recorder         *trace.Recorder
	Log              zerolog.Logger
	// KeyLog, when set, receives every session's keys (tli.KeyLogLabel
	// lines), agents' and administrators' alike: a debug aid for
	// decrypting captures, off unless asked for.
	KeyLog io.Writer
	// Now is the clock for sessions; nil means time.Now.
	Now func() time.Time
	// Metrics, when set, gets the server's Prometheus metrics.
	Metrics prometheus.Registerer
}

// Server answers agents on any number of listeners. It never lets one client
// hurt another: every connection has its own reader goroutine, deadlines
// bound every wait, and a bad frame ends only the connection that sent it.
// Requests are evaluated by a fixed number of worker threads fed by one
// queue (workers.go), as the vendor's server does.
type Server struct {
	cfg   Config
	conns atomic.Int64

	pool    *workers
	metrics *serverMetrics
	// dirLatency is slow-directory's latency per lookup; nil: the store's.
	dirLatency atomic.Pointer[time.Duration]
	// spare is a descriptor held back for the descriptor limit: closing it
	// lets the server accept, and refuse at once, a connection it has no
	// descriptor for, rather than leave the client waiting in the backlog.
	spareMu sync.Mutex
	spare   *os.File
	serving int // Serve calls running

	mu     sync.Mutex
	active map[net.Conn]struct{}
	wg     sync.WaitGroup

	stats Stats

	faults faults
}

// Stats are counters for tests, status and benchmarks.
type Stats struct {
	Accepted       atomic.Int64
	Rejected       atomic.Int64 // over the connection limit
	HandshakeFails atomic.Int64
	Requests       atomic.Int64
	IdleClosed     atomic.Int64
}

// New checks the configuration and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("policy server: no policy store")
	}
	if cfg.Name == "" {
		return nil, errors.New("policy server: no host name")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Threads <= 0 {
		cfg.Threads = DefaultThreads
	}
	if cfg.QueueBound <= 0 {
		cfg.QueueBound = DefaultQueueBound
	}
	s := &Server{cfg: cfg, active: map[net.Conn]struct{}{}, metrics: newServerMetrics()}
	s.pool = newWorkers(cfg.Threads, cfg.QueueBound, s.evaluate)
	if cfg.Metrics != nil {
		if err := s.registerMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// LimitMessage is the vendor's log line for a connection over the limit.
func LimitMessage(max int) string {
	return fmt.Sprintf("Connection request rejected. Connection limit of %d exceeded.", max)
}

// Queue is the request queue and worker threads now.
func (s *Server) Queue() trace.QueueState { return s.pool.State() }

// FlushRequests drops every queued request, each answered with an error,
// and logs how many, as smpolicysrv -flushrequests does.
func (s *Server) FlushRequests() int {
	n := s.pool.flush()
	s.cfg.Log.Warn().Int("flushed", n).Msgf("Flushed %d requests from the request queue", n)
	return n
}

// Stats gives the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Conns is the number of open agent connections.
func (s *Server) Conns() int { return int(s.conns.Load()) }

// Serve accepts on l until ctx ends or Accept fails, then closes l and every
// connection it accepted and waits for their goroutines. It returns nil after a cancel and
// the accept error otherwise.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	fl := s.faults.add(l)
	s.holdSpare()
	defer s.releaseSpare()
	closeAll := func() {
		s.faults.shut(fl)
		s.mu.Lock()
		for c := range s.active {
			c.Close()
		}
		s.mu.Unlock()
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer func() {
		// An accept error ends the connections too: waiting for them
		// instead would hold the error back until the last agent went
		// idle, and the caller (smps's run group) cancels only once a
		// Serve has returned.
		if stop() {
			closeAll()
		}
		s.wg.Wait()
	}()
	// Out of file descriptors: refuse the waiting client at once with the
	// spare descriptor (acceptSpare) rather than leave it hanging in the
	// backlog; when even that fails, back off and go on, as net/http does,
	// rather than stop serving everyone.
	wait := backoff.Backoff{Min: 5 * time.Millisecond, Max: time.Second}
	for {
		c, err := s.faults.accept(ctx.Done(), fl)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				if !errors.Is(err, syscall.ECONNABORTED) && s.refuseWithSpare(ctx, fl, err) {
					continue
				}
				d := wait.Next()
				s.cfg.Log.Warn().Err(err).Dur("retry_in", d).Msg("accept failed")
				if backoff.Wait(ctx, d) != nil {
					return nil
				}
				continue
			}
			return fmt.Errorf("policy server %s: accept on %s: %w", s.cfg.Name, l.Addr(), err)
		}
		wait.Reset()
		tc := s.cfg.Recorder.Server(s.faults.wrap(c), "")
		if n := s.conns.Add(1); n > int64(s.cfg.MaxConns) {
			s.conns.Add(-1)
			s.refuse(tc, &trace.ConnLimit{Max: s.cfg.MaxConns, Message: LimitMessage(s.cfg.MaxConns)})
			continue
		}
		s.stats.Accepted.Add(1)
		s.mu.Lock()
		s.active[tc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.active, tc)
				s.mu.Unlock()
				s.conns.Add(-1)
				tc.Close()
			}()
			s.handle(ctx, tc)
		}()
	}
}

func (s *Server) secret(host string) ([]byte, bool) {
	th, ok := s.cfg.Store.TrustedHost(host)
	if !ok {
		return nil, false
	}
	return th.Secret, true
}

func (s *Server) handle(ctx context.Context, tc *trace.Conn) {
	peer := tc.RemoteAddr().String()
	log := s.cfg.Log.With().Str("peer", peer).Logger()
	sc, err := tli.ServerHandshake(ctx, tc, tli.ServerConfig{
		Name: s.cfg.Name, Secret: s.secret, AllowAdmin: true, HandshakeTimeout: s.cfg.HandshakeTimeout,
		KeyLog: s.cfg.KeyLog, Reject: s.rejectHandshake,
	})
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.stats.HandshakeFails.Add(1)
		var he *tli.HandshakeError
		code := -1
		if errors.As(err, &he) {
			code = he.Code
			ev := log.Warn().Int("code", he.Code)
			if he.Detail != "" {
				ev = ev.Str("detail", he.Detail)
			}
			if he.Err != nil {
				ev = ev.AnErr("cause", he.Err)
			}
			ev.Msgf("Handshake error: %s", he.Message)
		}
		s.metrics.handshake(code)
		log.Warn().Msgf("Failed handshake with %s", peer)
		drainClose(tc)
		return
	}
	s.metrics.handshake(0)
	who := sc.TrustedHost
	if sc.Admin {
		who = "administrator session for " + sc.TrustedHost
	}
	log = log.With().Str("trusted_host", who).Logger()
	log.Info().Msg("Accepted connection")

	expires := time.Now().Add(s.cfg.MaxLifetime)
	// Deadlines move forward only once they are stale by a slice of the
	// idle timeout: resetting a timer twice per request is a measurable
	// share of a loopback round trip, and the idle close may come up to
	// that slice early.
	slack := min(max(s.cfg.IdleTimeout/8, time.Millisecond), time.Second)
	var readDL, writeDL time.Time
	var req tlipb.Request
	// One request is in flight per socket: the connection's job carries
	// each of them through the queue in turn.
	j := &job{ctx: ctx, sc: sc, req: &req, log: log, done: make(chan answer, 1)}
	for {
		now := time.Now()
		dl := now.Add(s.cfg.IdleTimeout)
		if expires.Before(dl) {
			dl = expires
		}
		if dl.Sub(readDL) >= slack || dl.Equal(expires) && !readDL.Equal(expires) {
			tc.SetReadDeadline(dl)
			readDL = dl
		}
		req.Reset()
		ev, err := sc.ReadRequestEvent(&req)
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case tli.IsTimeout(err) && !time.Now().Before(expires):
				log.Info().Msgf("Closing connection: lifetime of %s reached", s.cfg.MaxLifetime)
			case tli.IsTimeout(err):
				s.stats.IdleClosed.Add(1)
				log.Info().Msgf("Closing idle connection after %s", s.cfg.IdleTimeout)
			case tli.IsClosed(err):
				log.Debug().Msg("Agent closed the connection")
			default:
				log.Warn().Err(err).Msg("Closing connection after a bad request")
			}
			return
		}
		read := time.Now()
		s.stats.Requests.Add(1)
		var a answer
		q, adm := s.pool.submit(j, func(q trace.QueueState) {
			if ev.Op != "" {
				joined := q // a copy on the heap only when traced
				ev.Queue = &joined
				tc.NoteEvent(ev)
			}
		})
		switch adm {
		case runNow:
			a = s.pool.runNow(j)
		case queued:
			a = <-j.done
		case full:
			if ev.Op != "" {
				refused := q
				ev.Queue = &refused
				tc.NoteEvent(ev)
			}
			a = answer{resp: queueFull(log, &req, q), q: q}
		}
		if wdl := time.Now().Add(s.cfg.IdleTimeout); wdl.Sub(writeDL) >= slack {
			tc.SetWriteDeadline(wdl)
			writeDL = wdl
		}
		var qp *trace.QueueState
		if tc.Tracing() {
			q := a.q
			qp = &q
		}
		// Counted before the send: whoever has the answer finds it counted.
		s.metrics.answered(&req, a.resp, time.Since(read))
		if err := sc.WriteResponseQueue(&req, a.resp, qp); err != nil {
			if ctx.Err() == nil {
				log.Warn().Err(err).Msg("Closing connection: reply failed")
			}
			return
		}
	}
}

// drainClose ends a refused connection with a FIN and reads briefly what
// the client still sends: closing with unread bytes would make the kernel
// answer with an RST, and the client could lose the error frame that says
// why it was refused.
func drainClose(tc *trace.Conn) {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := tc.Conn.(closeWriter)
	if !ok || cw.CloseWrite() != nil {
		return
	}
	tc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(tc, 64<<10))
}
