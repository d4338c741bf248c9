// Package startup is an agent process's start-up round, written once for
// every process that makes one (DOMAIN.md section 3): WebAgent.conf names
// SmHost.conf; the bootstrap hands over the HCO and resets its connection
// (package bootstrap); the HCO phase opens the pool's sockets, sends
// SetAgentInfo and fetches the ACO (package pool). w3wp.exe and every
// httpd child (package hla), the LLAWP (package llawp) and agentlab probe
// each go through Start or Probe.
//
// It sits above bootstrap and pool rather than in either: the two are
// siblings that each import only tli, conf and trace, and the round
// needs both; putting it in one would make that one import the other.
package startup

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/pool"
	"github.com/agentlab/agentlab/trace"
)

// Version is the product version every agent process reports in
// SetAgentInfo's instance string.
const Version = "0.1"

// InstanceInfo is SetAgentInfo's instance string (pool.AgentInfo.Info),
// the vendor's "Product=...,Platform=...,Version=..."; process, when not
// empty, names the web server process the agent runs in. The LLAWP gives
// none: its requests on the wire stay as they were recorded.
func InstanceInfo(process string) string {
	s := fmt.Sprintf("Product=agentlab,Platform=%s,Version=%s", runtime.GOOS, Version)
	if process != "" {
		s += ",Process=" + process
	}
	return s
}

// Files are an agent's two configuration files.
type Files struct {
	WebAgent *conf.WebAgent
	SmHost   *conf.SmHost
}

// ReadFiles reads the WebAgent.conf at path and the SmHost.conf it names.
// A process reads them before anything else, so that a broken file is its
// first and only error.
func ReadFiles(path string) (Files, error) {
	wa, err := conf.ReadWebAgent(path)
	if err != nil {
		return Files{}, err
	}
	sm, err := conf.ReadSmHost(wa.HostConfigFile)
	if err != nil {
		return Files{}, err
	}
	return Files{WebAgent: wa, SmHost: sm}, nil
}

// Config is one agent process's start-up round.
type Config struct {
	Files
	// HostID unseals SmHost.conf's shared secret (conf.HostIdentity).
	HostID string
	// Recorder records every socket and resolves the lab's host names;
	// nil records nothing.
	Recorder *trace.Recorder
	// Dialer sets the agent host's source address (trace.LocalDialer).
	Dialer *net.Dialer
	// Log receives the pool's events.
	Log zerolog.Logger
	// Role is the process's role in SetAgentInfo: "hla" or "llawp".
	Role string
	// Process names the process in SetAgentInfo's instance string
	// (InstanceInfo); "" leaves it out.
	Process string
	// SkipACO leaves GetAgentConfig out of the HCO phase
	// (pool.Config.SkipACO): an Apache child that takes its ACO from the
	// LLAWP. Start then returns the zero ACO.
	SkipACO bool
	// HealthPoll is pool.Config.HealthPollInterval.
	HealthPoll time.Duration
	// Bootstrapped, when set, is called once the bootstrap has given the
	// HCO and before the HCO phase opens its first socket: where a process
	// logs its bootstrap, so that its log reads in the order the wire
	// shows.
	Bootstrapped func(*bootstrap.Result)
}

// Agent is an agent process through its start-up round.
type Agent struct {
	// Bootstrap is what the bootstrap found: the HCO, the server that
	// gave it, the ones skipped before it.
	Bootstrap *bootstrap.Result
	// Pool holds the sockets to the HCO's servers; the caller closes it.
	Pool *pool.Pool
	// ACO is the agent configuration object (zero with SkipACO).
	ACO conf.ACO
}

// Start makes the round: bootstrap, then the HCO phase. The returned
// pool lives until the caller closes it; ctx bounds the round only.
func Start(ctx context.Context, cfg Config) (*Agent, error) {
	boot, err := runBootstrap(ctx, cfg)
	if err != nil {
		return nil, err
	}
	sm := cfg.SmHost
	p, aco, err := pool.Start(ctx, pool.Config{
		HCO: boot.HCO, TrustedHost: sm.HostName, Secret: boot.Secret,
		Recorder: cfg.Recorder, Dialer: cfg.Dialer, Log: cfg.Log, SkipACO: cfg.SkipACO,
		HealthPollInterval: cfg.HealthPoll,
	}, pool.AgentInfo{
		AgentName: sm.HostName, PID: os.Getpid(), Role: cfg.Role, Info: InstanceInfo(cfg.Process),
	}, cfg.WebAgent.AgentConfigObject)
	if err != nil {
		return nil, err
	}
	return &Agent{Bootstrap: boot, Pool: p, ACO: aco}, nil
}

// runBootstrap is the round's first step, for Start and Probe alike.
func runBootstrap(ctx context.Context, cfg Config) (*bootstrap.Result, error) {
	if cfg.WebAgent == nil || cfg.SmHost == nil {
		return nil, fmt.Errorf("startup: no configuration files: read them with ReadFiles first")
	}
	boot, err := bootstrap.Run(ctx, bootstrap.Config{SmHost: cfg.SmHost, HostID: cfg.HostID, Recorder: cfg.Recorder, Dialer: cfg.Dialer})
	if err != nil {
		return nil, err // it names every server tried
	}
	if cfg.Bootstrapped != nil {
		cfg.Bootstrapped(boot)
	}
	return boot, nil
}
