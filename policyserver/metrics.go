package policyserver

// The server's Prometheus metrics (smps --metrics; names in package
// metrics). Gauges and the connection counters are read from the server's
// own state when scraped, so the request path pays only for the labelled
// counters and the histogram.

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

type serverMetrics struct {
	handshakes *prometheus.CounterVec
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	lookups    prometheus.Counter

	// byKey keeps each request type and result's counter and histogram:
	// WithLabelValues costs allocations on every request, a map lookup
	// none.
	mu    sync.RWMutex
	byKey map[reqKey]reqMetrics
}

type reqKey struct {
	call   string
	result tlipb.Result
}

type reqMetrics struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// HandshakeOK is the result label of a handshake that succeeded; a failed
// one is labelled with the vendor's error code, or HandshakeDropped when
// the client went away without one.
const (
	HandshakeOK      = "ok"
	HandshakeDropped = "dropped"
)

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metrics.SmpsHandshakes,
			Help: "Handshakes by result: ok, or the vendor's error code (3152-3157), or dropped."}, []string{metrics.LabelResult}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metrics.SmpsRequests,
			Help: "Requests answered, by type and Agent API result."}, []string{metrics.LabelType, metrics.LabelResult}),
		// Buckets from a loopback answer (under a millisecond) to an
		// agent's RequestTimeout and past it.
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metrics.SmpsRequestSeconds,
			Help:    "Time from a request read to its answer sent, queue wait and directory included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{metrics.LabelType}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{Name: metrics.SmpsDirectoryLookups,
			Help: "User directory lookups made by worker threads (Login and Authorize)."}),
		byKey: map[reqKey]reqMetrics{},
	}
}

// register puts the server's metrics in reg.
func (s *Server) registerMetrics(reg prometheus.Registerer) error {
	m := s.metrics
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{
		m.handshakes, m.requests, m.latency, m.lookups,
		gauge(metrics.SmpsConnectionsOpen, "Open agent connections.", func() float64 { return float64(s.Conns()) }),
		counter(metrics.SmpsConnectionsAccepted, "Connections taken.", func() float64 { return float64(s.stats.Accepted.Load()) }),
		counter(metrics.SmpsConnectionsRejected, "Connections refused at the connection limit (--max-conns) or the descriptor limit.",
			func() float64 { return float64(s.stats.Rejected.Load()) }),
		gauge(metrics.SmpsQueueDepth, "Requests waiting for a worker thread.", func() float64 { return float64(s.pool.State().Depth) }),
		gauge(metrics.SmpsThreads, "Worker threads (--threads).", func() float64 { return float64(s.pool.threads) }),
		gauge(metrics.SmpsThreadsBusy, "Worker threads evaluating a request.", func() float64 { return float64(s.pool.State().Busy) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("policy server %s: metrics: %w", s.cfg.Name, err)
		}
	}
	return nil
}

func (m *serverMetrics) handshake(code int) {
	switch code {
	case 0:
		m.handshakes.WithLabelValues(HandshakeOK).Inc()
	case -1:
		m.handshakes.WithLabelValues(HandshakeDropped).Inc()
	default:
		m.handshakes.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

func (m *serverMetrics) answered(req *tlipb.Request, resp *tlipb.Response, took time.Duration) {
	k := reqKey{call: tli.Call(req), result: resp.GetResult()}
	m.mu.RLock()
	rm, ok := m.byKey[k]
	m.mu.RUnlock()
	if !ok {
		rm = reqMetrics{count: m.requests.WithLabelValues(k.call, k.result.String()), latency: m.latency.WithLabelValues(k.call)}
		m.mu.Lock()
		m.byKey[k] = rm
		m.mu.Unlock()
	}
	rm.count.Inc()
	rm.latency.Observe(took.Seconds())
}
