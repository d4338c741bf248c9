package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// Registration is what smreghost asks for.
type Registration struct {
	// Server is the Policy Server to register with: "host" or "host:port".
	Server        string
	AdminUser     string
	AdminPassword string
	TrustedHost   string
	HCO           string
	// File is the SmHost.conf to write.
	File      string
	Overwrite bool
	FIPSMode  conf.FIPSMode
	// Secret, when set, is the shared secret to register (-sh); the server
	// generates one otherwise.
	Secret   []byte
	HostID   string
	Recorder *trace.Recorder
	Dialer   *net.Dialer
}

// BootstrapServer is the policyserver line smreghost writes for -i: the
// vendor's three ports, or the given port alone when it is not the
// authorization port (one server process answers on any of them).
func BootstrapServer(server string) (conf.PolicyServer, error) {
	host, port := server, conf.AuthorizationPort
	if h, p, err := net.SplitHostPort(server); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return conf.PolicyServer{}, fmt.Errorf("policy server %q: bad port %q", server, p)
		}
		host, port = h, n
	}
	if host == "" || strings.ContainsAny(host, ", \t\"") {
		return conf.PolicyServer{}, fmt.Errorf("policy server %q: bad host name", server)
	}
	if port == conf.AuthorizationPort {
		return conf.PolicyServer{Host: host, AccountingPort: conf.AccountingPort, AuthenticationPort: conf.AuthenticationPort, AuthorizationPort: port}, nil
	}
	return conf.PolicyServer{Host: host, AuthorizationPort: port}, nil
}

// Register registers the trusted host over an administrator session and
// writes SmHost.conf with the secret sealed to this host.
func Register(ctx context.Context, r Registration) (*conf.SmHost, error) {
	ps, err := BootstrapServer(r.Server)
	if err != nil {
		return nil, err
	}
	if r.FIPSMode == "" {
		r.FIPSMode = conf.DefaultFIPSMode
	}
	if !r.Overwrite {
		if _, err := os.Stat(r.File); err == nil {
			return nil, fmt.Errorf("%s already exists; use -o to overwrite it", r.File)
		}
	}
	// The administrator session names, in its clear hello, the host it
	// registers: a capture of the registration then shows which trusted
	// host it was for, as the agents' sessions show theirs.
	c, err := tli.Dial(ctx, ps.Addr(), tli.ClientConfig{Admin: true, TrustedHost: r.TrustedHost, Recorder: r.Recorder, Dialer: r.Dialer, Phase: trace.PhaseAdmin})
	if err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	defer c.Close()
	resp, err := c.Do(ctx, &tlipb.Request{Body: &tlipb.Request_RegisterHost{RegisterHost: &tlipb.RegisterHostRequest{
		AdminUser: r.AdminUser, AdminPassword: r.AdminPassword, TrustedHost: r.TrustedHost,
		HostConfigObject: r.HCO, Overwrite: r.Overwrite, FipsMode: string(r.FIPSMode), SharedSecret: r.Secret,
	}}})
	if err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	if resp.Result != tlipb.Result_SUCCESS || len(resp.GetRegisterHost().GetSharedSecret()) == 0 {
		return nil, fmt.Errorf("registration of trusted host %q at %s refused: %s", r.TrustedHost, ps.Addr(), resp.Message)
	}
	sealed, err := conf.SealSecret(resp.GetRegisterHost().GetSharedSecret(), r.HostID)
	if err != nil {
		return nil, err
	}
	sm, err := conf.NewSmHost(r.File, conf.SmHost{
		HostName: r.TrustedHost, SharedSecret: sealed, HostConfigObject: r.HCO,
		PolicyServers: []conf.PolicyServer{ps}, FIPSMode: r.FIPSMode,
	})
	if err != nil {
		return nil, err
	}
	if err := sm.File.WriteFile(r.File, 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("trusted host %q is registered but %s could not be written", r.TrustedHost, r.File), err)
	}
	return sm, nil
}
