// Package metrics is the contract for the Prometheus metrics the lab's
// processes serve: the names every side uses (the process that counts,
// the lab that scrapes and charts them, the tests), and Serve, the one
// loopback /metrics endpoint. The exposition is the Prometheus Go
// client's, never written by hand.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// A Policy Server's (smps) metrics.
const (
	// SmpsConnectionsOpen is a gauge of open TLI connections.
	SmpsConnectionsOpen = "smps_connections_open"
	// SmpsConnectionsAccepted and SmpsConnectionsRejected count
	// connections taken, and refused at the connection limit.
	SmpsConnectionsAccepted = "smps_connections_accepted_total"
	SmpsConnectionsRejected = "smps_connections_rejected_total"
	// SmpsHandshakes counts handshakes by LabelResult (ok, or the vendor's
	// error code).
	SmpsHandshakes = "smps_handshakes_total"
	// SmpsRequests counts requests by LabelType (a trace Req constant)
	// and LabelResult.
	SmpsRequests = "smps_requests_total"
	// SmpsQueueDepth is a gauge of requests waiting for a worker thread.
	SmpsQueueDepth = "smps_queue_depth"
	// SmpsThreads and SmpsThreadsBusy are gauges of worker threads, and
	// of those evaluating a request.
	SmpsThreads     = "smps_threads"
	SmpsThreadsBusy = "smps_threads_busy"
	// SmpsRequestSeconds is a histogram of the time from a request read
	// to its answer sent, by LabelType.
	SmpsRequestSeconds = "smps_request_duration_seconds"
	// SmpsDirectoryLookups counts user directory lookups.
	SmpsDirectoryLookups = "smps_directory_lookups_total"
)

// A web agent process's metrics (w3wp.exe, the httpd parent for its
// children, the LLAWP), for its pool.
const (
	// AgentSockets is a gauge of the pool's sockets by LabelServer
	// (host:port) and LabelState (idle, busy).
	AgentSockets = "webagent_sockets"
	// AgentServerState is 1 for the state (LabelState: Active, Inactive,
	// Disabled, Failed) the pool has each server (LabelServer) in.
	AgentServerState = "webagent_server_state"
	// AgentCallersWaiting is a gauge of callers waiting for a socket.
	AgentCallersWaiting = "webagent_callers_waiting"
	// AgentRequests counts requests by LabelType and LabelResult.
	AgentRequests = "webagent_requests_total"
	// AgentResends counts requests sent again on another connection after
	// RequestTimeout.
	AgentResends = "webagent_resends_total"
)

// Label names.
const (
	LabelResult = "result"
	LabelType   = "type"
	LabelServer = "server"
	LabelState  = "state"
	// LabelPID is the worker process whose pool a web server's parent
	// reports (the Apache model's httpd children, IIS's w3wp.exe).
	LabelPID = "pid"
)

// Path is where Serve answers.
const Path = "/metrics"

// Serve serves reg's metrics at http://ADDR/metrics until ctx ends, and
// returns the address it listens on (addr may give port 0). addr must be
// a loopback address: the lab never listens elsewhere. reg is usually a
// *prometheus.Registry; a web server's parent passes a Gatherer of its
// workers' metrics.
func Serve(ctx context.Context, addr string, reg prometheus.Gatherer) (net.Addr, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %q: want host:port: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("--metrics %q: want a loopback address (127.0.0.0/8)", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			// The listener failed under us: nothing more to serve.
			l.Close()
		}
	}()
	return l.Addr(), nil
}

// MaxBody bounds a scraped exposition: a process's few hundred series
// are far below it, and a runaway one cannot fill the scraper's memory.
const MaxBody = 4 << 20

// Scrape reads http://addr/metrics in the text format and parses it with
// Prometheus's own text parser: the one scrape the lab, the httpd parent
// (its children's pools) and the tests share.
func Scrape(ctx context.Context, c *http.Client, addr string) (map[string]*dto.MetricFamily, error) {
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+Path, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, MaxBody))
		return nil, fmt.Errorf("scrape %s: GET %s: %s", addr, Path, resp.Status)
	}
	fams, err := Parse(io.LimitReader(resp.Body, MaxBody))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	return fams, nil
}

// Parse reads Prometheus's text exposition.
func Parse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", Path, err)
	}
	return fams, nil
}
