package llawp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/pool"
	"github.com/agentlab/agentlab/proto/tlipb"
)

// GetAgentCommands is the DoManagement command the LLAWP polls with.
const GetAgentCommands = "GET_AGENT_COMMANDS"

// Client sends one request to a Policy Server; the LLAWP's socket pool is
// one.
type Client interface {
	Do(ctx context.Context, req *tlipb.Request) (*tlipb.Response, error)
}

// Poller sends DoManagement GET_AGENT_COMMANDS every Interval, the first
// right away, and relays each command it gets back, in order. A poll that
// fails is logged and simply tried again at the next tick: a server that
// is down for a while delays flushes, as the vendor's does, by up to one
// interval after it is back.
type Poller struct {
	Client    Client
	AgentName string
	Interval  time.Duration
	// Timeout bounds one poll; 0 means Interval.
	Timeout time.Duration
	// Relay receives each command as an event (Registry.Publish).
	Relay func(ipc.ManagementEvent) (delivered, dropped int)
	// Log is the agent log: failures and relayed commands.
	Log zerolog.Logger
	// Trace is the trace log: every poll and its result.
	Trace zerolog.Logger
	Now   func() time.Time

	mu    sync.Mutex
	stats PollStats
}

// PollStats are a Poller's counters.
type PollStats struct {
	Polls     uint64
	Failed    uint64
	LastPoll  time.Time
	LastError string // empty when the last poll succeeded
	Relayed   uint64
}

// Stats returns the counters.
func (p *Poller) Stats() PollStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Run polls until ctx ends and returns ctx's error.
func (p *Poller) Run(ctx context.Context) error {
	if p.Interval <= 0 {
		return fmt.Errorf("llawp: management poll interval %v must be positive", p.Interval)
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		p.Poll(ctx)
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Poll does one DoManagement round trip and relays what it returns.
func (p *Poller) Poll(ctx context.Context) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = p.Interval
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	started := now()
	cmds, err := p.poll(rctx)

	p.mu.Lock()
	p.stats.Polls++
	p.stats.LastPoll = started
	p.stats.LastError = ""
	if err != nil {
		p.stats.Failed++
		p.stats.LastError = err.Error()
	}
	p.mu.Unlock()

	if err != nil {
		if ctx.Err() != nil {
			return // stopping: not a failure worth a warning
		}
		// The agent log names what to look at: a Policy Server at its
		// connection limit, a slow one, one that is down (pool.LikelyCause).
		ev := p.Log.Warn().Err(err)
		ev.Msgf("DoManagement %s for agent '%s' failed; retrying in %v%s.", GetAgentCommands, p.AgentName, p.Interval, pool.LogCause(ev, err))
		p.Trace.Warn().Err(err).Str("agent", p.AgentName).Msgf("DoManagement %s failed", GetAgentCommands)
		return
	}
	p.Trace.Info().Str("agent", p.AgentName).Int("commands", len(cmds)).Stringer("took", now().Sub(started)).
		Msgf("DoManagement %s: %d command(s)", GetAgentCommands, len(cmds))
	for _, c := range cmds {
		ev := ipc.ManagementEvent{Code: c.Code, Name: c.Name, Arg: c.Arg, Time: started}
		if ev.Name == "" {
			ev.Name = ipc.EventName(c.Code)
		}
		var delivered, dropped int
		if p.Relay != nil {
			delivered, dropped = p.Relay(ev)
		}
		p.mu.Lock()
		p.stats.Relayed++
		p.mu.Unlock()
		e := p.Log.Info().Uint32("code", ev.Code).Int("watchers", delivered)
		if ev.Arg != "" {
			e = e.Str("arg", ev.Arg)
		}
		if dropped > 0 {
			e = e.Int("dropped", dropped)
		}
		e.Msgf("Management command %s (%d) relayed to %d watcher(s).", ev.Name, ev.Code, delivered)
		t := p.Trace.Info().Uint32("code", ev.Code).Int("delivered", delivered).Int("dropped", dropped)
		if ev.Arg != "" {
			t = t.Str("arg", ev.Arg)
		}
		t.Msgf("Relayed %s", ev.Name)
	}
}

func (p *Poller) poll(ctx context.Context) ([]*tlipb.ManagementCommand, error) {
	if p.Client == nil {
		return nil, errors.New("no connection to a Policy Server")
	}
	resp, err := p.Client.Do(ctx, &tlipb.Request{Body: &tlipb.Request_DoManagement{
		DoManagement: &tlipb.DoManagementRequest{AgentName: p.AgentName, Command: GetAgentCommands},
	}})
	if err != nil {
		return nil, err
	}
	if resp.Result != tlipb.Result_SUCCESS {
		if resp.Message != "" {
			return nil, fmt.Errorf("%s: %s", resp.Result, resp.Message)
		}
		return nil, fmt.Errorf("%s", resp.Result)
	}
	return resp.GetDoManagement().GetCommands(), nil
}
