package startup

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// ServerCheck is one HCO server as a probe found it.
type ServerCheck struct {
	Server     conf.PolicyServer
	ServerName string // as the server named itself in its hello
	Err        error
}

// ProbeResult is what Probe found.
type ProbeResult struct {
	*bootstrap.Result
	Servers []ServerCheck
	ACO     conf.ACO
	ACOFrom string
}

// Probe checks an agent's configuration against live servers the way
// Start would use it: the same bootstrap for the HCO, then, in place of
// the pool, one session with each server the HCO lists, and the ACO over
// the first of them. It opens one socket per server, not
// MinSocketsPerPort, and sends no SetAgentInfo: it checks, it does not
// pool. Every server's outcome is reported, not only the first failure.
// Of cfg it uses the files, HostID, Recorder and Dialer.
func Probe(ctx context.Context, cfg Config) (*ProbeResult, error) {
	res, err := runBootstrap(ctx, cfg)
	if err != nil {
		return nil, err
	}
	acoName := cfg.WebAgent.AgentConfigObject
	out := &ProbeResult{Result: res}
	var failed []error
	for _, ps := range res.HCO.PolicyServers {
		chk := ServerCheck{Server: ps}
		chk.ServerName, err = probeServer(ctx, cfg, ps, res.Secret, acoName, out)
		if err != nil {
			chk.Err = err
			failed = append(failed, err)
		}
		out.Servers = append(out.Servers, chk)
	}
	if len(failed) > 0 {
		return out, bootstrap.JoinErrors(fmt.Sprintf("HCO %s: %d of %d policy servers failed:", res.HCO.Name, len(failed), len(out.Servers)), failed)
	}
	if out.ACOFrom == "" {
		return out, fmt.Errorf("HCO %s lists no server that gave ACO %s", res.HCO.Name, acoName)
	}
	return out, nil
}

func probeServer(ctx context.Context, cfg Config, ps conf.PolicyServer, secret []byte, acoName string, out *ProbeResult) (string, error) {
	c, err := tli.Dial(ctx, ps.Addr(), tli.ClientConfig{
		TrustedHost: cfg.SmHost.HostName, Secret: secret, Recorder: cfg.Recorder, Dialer: cfg.Dialer, Phase: trace.PhaseHCO,
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	if out.ACOFrom != "" {
		return c.ServerName, nil
	}
	rctx, cancel := context.WithTimeout(ctx, out.HCO.RequestTimeout.D())
	defer cancel()
	resp, err := c.Do(rctx, &tlipb.Request{Body: &tlipb.Request_GetAgentConfig{GetAgentConfig: &tlipb.GetAgentConfigRequest{Name: acoName}}})
	if err != nil {
		return c.ServerName, err
	}
	if resp.Result != tlipb.Result_SUCCESS {
		return c.ServerName, fmt.Errorf("%s: GetAgentConfig %s: %s %s", ps.Addr(), acoName, resp.Result, resp.Message)
	}
	if out.ACO, err = conf.ACOFromProto(resp.GetAgentConfig()); err != nil {
		return c.ServerName, fmt.Errorf("%s: ACO %s is unusable: %w", ps.Addr(), acoName, err)
	}
	out.ACOFrom = ps.Addr()
	return c.ServerName, nil
}

// String reports a probe for a person.
func (p *ProbeResult) String() string {
	var b strings.Builder
	for _, s := range p.Skipped {
		fmt.Fprintf(&b, "bootstrap: skipped %v\n", s)
	}
	fmt.Fprintf(&b, "bootstrap: %s gave HCO %s and the connection was reset\n", p.Server.Addr(), p.HCO.Name)
	h := p.HCO
	fmt.Fprintf(&b, "HCO %s: enablefailover=%s minsocketsperport=%d newsocketstep=%d maxsocketsperport=%d requesttimeout=%d\n",
		h.Name, yesNo(h.EnableFailover), h.MinSocketsPerPort, h.NewSocketStep, h.MaxSocketsPerPort, int(h.RequestTimeout.D().Seconds()))
	for _, s := range p.Servers {
		if s.Err != nil {
			fmt.Fprintf(&b, "  %s: FAILED: %v\n", s.Server.Addr(), s.Err)
		} else {
			fmt.Fprintf(&b, "  %s: handshake OK (server says it is %s)\n", s.Server.Addr(), s.ServerName)
		}
	}
	if p.ACOFrom != "" {
		a := p.ACO
		fmt.Fprintf(&b, "ACO %s from %s: defaultagentname=%s pspollinterval=%d maxresourcecachesize=%d maxsessioncachesize=%d\n",
			a.Name, p.ACOFrom, a.DefaultAgentName, int(a.PSPollInterval.D().Seconds()), a.MaxResourceCacheSize, a.MaxSessionCacheSize)
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
