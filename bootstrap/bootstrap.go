// Package bootstrap is an agent process's first contact with the Policy
// Servers: WebAgent.conf names SmHost.conf, SmHost.conf names the bootstrap
// servers, and the first that answers hands over the Host Configuration
// Object; then the agent resets that connection (the seed sees the RST).
// From then on only the HCO's server list counts. Register is the step
// before: smreghost's registration, which writes SmHost.conf.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// Config is what one agent process bootstraps with.
type Config struct {
	SmHost *conf.SmHost
	// HostID unseals the shared secret (conf.HostIdentity()).
	HostID   string
	Recorder *trace.Recorder
	// Dialer sets the agent host's source address.
	Dialer *net.Dialer
	// HandshakeTimeout caps each server's handshake; the request itself is
	// bounded by SmHost.conf's requesttimeout.
	HandshakeTimeout time.Duration
}

// Result is what the bootstrap found.
type Result struct {
	HCO conf.HCO
	// Server is the bootstrap server that answered.
	Server conf.PolicyServer
	// Secret is the unsealed shared secret, for the HCO phase.
	Secret []byte
	// Skipped lists the servers tried before it, with why.
	Skipped []error
}

// ServerError is one bootstrap server that did not give the HCO.
type ServerError struct {
	Server conf.PolicyServer
	File   string
	Line   int
	Err    error
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("%s (%s:%d): %v", e.Server.Addr(), e.File, e.Line, e.Err)
}

func (e *ServerError) Unwrap() error { return e.Err }

// Run tries the SmHost.conf policyserver lines in order and returns the HCO
// from the first server that gives it. A server that is down is skipped; if
// none answers the error names each one tried.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	sm := cfg.SmHost
	secret, err := sm.Secret(cfg.HostID)
	if err != nil {
		return nil, err
	}
	res := &Result{Secret: secret}
	for i, ps := range sm.PolicyServers {
		line := 0
		if i < len(sm.Lines.PolicyServers) {
			line = sm.Lines.PolicyServers[i]
		}
		hco, err := fetchHCO(ctx, cfg, ps, secret)
		if err == nil {
			res.HCO, res.Server = hco, ps
			return res, nil
		}
		res.Skipped = append(res.Skipped, &ServerError{Server: ps, File: sm.File.Path(), Line: line, Err: err})
		if ctx.Err() != nil {
			break
		}
	}
	return res, JoinErrors(fmt.Sprintf("bootstrap of trusted host %q failed: no policy server in %s gave host configuration object %q:",
		sm.HostName, sm.File.Path(), sm.HostConfigObject), res.Skipped)
}

// listError is a headline and the errors under it, one per line; errors.Is
// and errors.As see each of them (tli.ErrClosedBeforeHello, a
// *trace.UnknownHostError), so that a caller can tell why.
type listError struct {
	msg  string
	errs []error
}

// JoinErrors is errs under headline, one per line and indented, as the
// bootstrap reports every server it tried; errors.Is and errors.As see
// each of them. startup.Probe reports the HCO's servers the same way.
func JoinErrors(headline string, errs []error) error {
	var b strings.Builder
	b.WriteString(headline)
	for _, e := range errs {
		b.WriteString("\n  " + e.Error())
	}
	return &listError{msg: b.String(), errs: errs}
}

func (e *listError) Error() string   { return e.msg }
func (e *listError) Unwrap() []error { return e.errs }

func fetchHCO(ctx context.Context, cfg Config, ps conf.PolicyServer, secret []byte) (conf.HCO, error) {
	sm := cfg.SmHost
	c, err := tli.Dial(ctx, ps.Addr(), tli.ClientConfig{
		TrustedHost: sm.HostName, Secret: secret, Recorder: cfg.Recorder, Dialer: cfg.Dialer,
		HandshakeTimeout: cfg.HandshakeTimeout, Phase: trace.PhaseBootstrap,
	})
	if err != nil {
		var he *tli.HandshakeError
		if errors.As(err, &he) && he.Code == tli.CodeSecretIncorrect {
			return conf.HCO{}, fmt.Errorf("%w: the server does not accept trusted host %q with this shared secret; register this host again with smreghost", err, sm.HostName)
		}
		return conf.HCO{}, err
	}
	// The bootstrap connection is always reset, never closed: that RST is
	// what the seed's capture shows.
	defer c.Reset()
	rctx, cancel := context.WithTimeout(ctx, sm.RequestTimeout.D())
	defer cancel()
	resp, err := c.Do(rctx, &tlipb.Request{Body: &tlipb.Request_GetHostConfig{GetHostConfig: &tlipb.GetHostConfigRequest{Name: sm.HostConfigObject}}})
	if err != nil {
		return conf.HCO{}, err
	}
	if resp.Result != tlipb.Result_SUCCESS || resp.GetHostConfig() == nil {
		return conf.HCO{}, fmt.Errorf("GetHostConfig %s: %s %s", sm.HostConfigObject, resp.Result, resp.Message)
	}
	hco, err := conf.HCOFromProto(resp.GetHostConfig())
	if err != nil {
		return conf.HCO{}, fmt.Errorf("HCO %s from the server is unusable: %w", sm.HostConfigObject, err)
	}
	return hco, nil
}
