package hla

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/pool"
	"github.com/agentlab/agentlab/trace"
)

// Version is what SetAgentInfo reports.
const Version = "0.1"

// LLAWPConfig says how a worker starts its LLAWP.
type LLAWPConfig struct {
	Path   string   // the llawp binary
	Args   []string // its flags (WebAgent.conf, folders, hosts, poll)
	Env    []string
	Stderr io.Writer
	// MinBackoff and MaxBackoff bound the wait before a dead LLAWP is
	// started again; 0 means 1 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
}

// ProcessConfig is one web worker process of the IIS model (w3wp.exe): it
// bootstraps, builds its socket pool, serves HTTP through the agent, and
// owns the LLAWP.
type ProcessConfig struct {
	WebAgent string // path to WebAgent.conf
	Listen   string // HTTP address, e.g. 127.0.0.11:8080
	// Listener, when set, is used instead of Listen (tests, and the Apache
	// model's shared socket).
	Listener net.Listener
	HostID   string
	Recorder *trace.Recorder
	Dialer   *net.Dialer
	ProcName string
	Log      zerolog.Logger
	// Forwarder receives the worker's log records for the LLAWP's WA.log;
	// Log should already write into it.
	Forwarder *ipc.LogForwarder
	LLAWP     LLAWPConfig
	// Upstream is the application behind the agent; nil: the built-in site.
	Upstream *url.URL
	// Ready is called with the HTTP address once the worker serves.
	Ready func(addr string)
}

// RunIIS runs the IIS model's worker until ctx ends: the first round of the
// seed's capture (bootstrap, then the HCO phase), then the LLAWP it spawns,
// which does the second round on its own. Authorization never waits for
// the LLAWP: if it dies, the worker logs it, goes on serving, and starts a
// new one.
func RunIIS(ctx context.Context, cfg ProcessConfig) error {
	log := cfg.Log
	wa, err := conf.ReadWebAgent(cfg.WebAgent)
	if err != nil {
		return err
	}
	sm, err := conf.ReadSmHost(wa.HostConfigFile)
	if err != nil {
		return err
	}
	boot, err := bootstrap.Run(ctx, bootstrap.Config{SmHost: sm, HostID: cfg.HostID, Recorder: cfg.Recorder, Dialer: cfg.Dialer})
	if err != nil {
		return err
	}
	log.Info().Str("server", boot.Server.Addr()).Str("hco", boot.HCO.Name).Msg("Bootstrap: host configuration object received, bootstrap connection reset")
	p, aco, err := pool.Start(ctx, pool.Config{
		HCO: boot.HCO, TrustedHost: sm.HostName, Secret: boot.Secret,
		Recorder: cfg.Recorder, Dialer: cfg.Dialer, Log: log,
	}, pool.AgentInfo{
		AgentName: sm.HostName, PID: os.Getpid(), Role: "hla",
		Info: fmt.Sprintf("Product=agentlab,Platform=%s,Version=%s,Process=%s", runtime.GOOS, Version, cfg.ProcName),
	}, wa.AgentConfigObject)
	if err != nil {
		return err
	}
	defer p.Close()

	var next http.Handler = NewSite()
	if cfg.Upstream != nil {
		if next, err = NewUpstream(cfg.Upstream); err != nil {
			return err
		}
	}
	agent, err := NewAgent(Config{Client: p, AgentName: aco.DefaultAgentName, ACO: aco, Next: next, Log: log,
		RequestTimeout: boot.HCO.RequestTimeout.D()})
	if err != nil {
		return err
	}

	l := cfg.Listener
	if l == nil {
		if l, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen for HTTP on %s: %w", cfg.Listen, err)
		}
	}
	srv := &http.Server{Handler: agent, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()

	sup := &supervisor{cfg: cfg, agent: agent, log: log}
	var wg sync.WaitGroup
	sctx, stopSup := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); sup.run(sctx) }()
	if cfg.Ready != nil {
		cfg.Ready(l.Addr().String())
	}

	select {
	case <-ctx.Done():
		err = nil
	case err = <-serveErr:
		err = fmt.Errorf("HTTP server on %s: %w", l.Addr(), err)
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutCtx)
	stopSup()
	wg.Wait()
	return err
}

// supervisor keeps one LLAWP running for the worker: it launches it,
// registers, applies its management events to the agent's caches, forwards
// log records, and starts a new one (with backoff) when it dies.
type supervisor struct {
	cfg   ProcessConfig
	agent *Agent
	log   zerolog.Logger
}

func (s *supervisor) run(ctx context.Context) {
	minB, maxB := s.cfg.LLAWP.MinBackoff, s.cfg.LLAWP.MaxBackoff
	if minB <= 0 {
		minB = time.Second
	}
	if maxB <= 0 {
		maxB = 30 * time.Second
	}
	backoff := minB
	for ctx.Err() == nil {
		started := time.Now()
		err := s.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > maxB {
			backoff = minB
		}
		s.log.Error().Err(err).Dur("restart_in", backoff).Msg("LLAWP is gone; authorization goes on, a new LLAWP will be started")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxB)
	}
}

// once runs one LLAWP from launch to exit (or to ctx's end, when it stops it).
func (s *supervisor) once(ctx context.Context) error {
	o, err := ipc.Launch(ctx, ipc.LaunchConfig{
		Path: s.cfg.LLAWP.Path, Args: s.cfg.LLAWP.Args, Env: s.cfg.LLAWP.Env,
		Stderr: s.cfg.LLAWP.Stderr, Logger: s.log,
	})
	if err != nil {
		return fmt.Errorf("launch LLAWP: %w", err)
	}
	defer o.Kill()
	s.log.Info().Int("llawp_pid", o.PID()).Msg("LLAWP started")
	l := o.LLAWP()
	id, err := l.Register(ctx, ipc.Worker{PID: os.Getpid(), Name: s.cfg.ProcName, Role: "hla"})
	if err != nil {
		return fmt.Errorf("register with the LLAWP: %w", err)
	}
	if s.cfg.Forwarder != nil {
		s.cfg.Forwarder.SetWorker(id)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The forwarder stops on cancel; wait for it before the LLAWP is killed.
	defer func() { cancel(); wg.Wait() }()
	events, err := l.Watch(wctx, id)
	if err != nil {
		return fmt.Errorf("watch the LLAWP: %w", err)
	}
	if s.cfg.Forwarder != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.cfg.Forwarder.Forward(wctx, l); err != nil && wctx.Err() == nil {
				s.log.Warn().Err(err).Msg("Log stream to the LLAWP broke; records are kept until it is back")
			}
		}()
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				select {
				case <-o.Exited():
					return errors.New("the LLAWP exited")
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
					return errors.New("the LLAWP closed its event stream")
				}
			}
			s.log.Info().Uint32("code", ev.Code).Str("command", ev.Name).Str("arg", ev.Arg).Msg("Management command from the LLAWP")
			s.agent.Apply(ManagementEvent{Code: int(ev.Code), Name: ev.Name, Arg: ev.Arg})
		case <-o.Exited():
			return fmt.Errorf("the LLAWP (pid %d) exited", o.PID())
		case <-ctx.Done():
			uctx, c := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			l.Unregister(uctx, id)
			c()
			cancel()
			return ctx.Err()
		}
	}
}
