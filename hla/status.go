package hla

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/pool"
)

// StatusPath is where every web worker answers, itself and not through
// the agent, with its LLAWP's Status: the LLAWP, and every worker
// registered with it, with each worker's sockets per Policy Server. Like
// Apache's /server-status, it is for the people running the lab.
const StatusPath = "/agentlab/status"

// WorkerStatus is what StatusPath answers.
type WorkerStatus struct {
	Proc  string              `json:"proc"`
	PID   int                 `json:"pid"`
	Pool  []ipc.ServerSockets `json:"pool"`
	LLAWP *LLAWPStatus        `json:"llawp,omitempty"`
	// Error says why LLAWP is missing.
	Error string `json:"error,omitempty"`
}

// LLAWPStatus is ipc.Status for JSON readers (without the ACO, which is
// the lab's own agent configuration).
type LLAWPStatus struct {
	PID             int           `json:"pid"`
	Phase           string        `json:"phase"`
	Uptime          string        `json:"uptime"`
	AgentName       string        `json:"agent_name"`
	TrustedHost     string        `json:"trusted_host"`
	BootstrapServer string        `json:"bootstrap_server"`
	HCOServers      []string      `json:"hco_servers"`
	Polls           uint64        `json:"polls"`
	PollsFailed     uint64        `json:"polls_failed"`
	LastPollError   string        `json:"last_poll_error,omitempty"`
	CommandsRelayed uint64        `json:"commands_relayed"`
	Workers         []LLAWPWorker `json:"workers"`
}

// LLAWPWorker is one worker as its LLAWP sees it.
type LLAWPWorker struct {
	PID        int                 `json:"pid"`
	Name       string              `json:"name"`
	Registered time.Time           `json:"registered"`
	LogRecords uint64              `json:"log_records"`
	Reported   time.Time           `json:"reported"`
	Servers    []ipc.ServerSockets `json:"servers"`
}

func llawpStatus(st ipc.Status) *LLAWPStatus {
	out := &LLAWPStatus{
		PID: st.PID, Phase: st.Phase, Uptime: st.Uptime.Round(time.Millisecond).String(), AgentName: st.AgentName,
		TrustedHost: st.TrustedHost, BootstrapServer: st.BootstrapServer, HCOServers: st.HCOServers,
		Polls: st.Polls, PollsFailed: st.PollsFailed, LastPollError: st.LastPollError, CommandsRelayed: st.CommandsRelayed,
		Workers: []LLAWPWorker{},
	}
	for _, w := range st.Workers {
		out.Workers = append(out.Workers, LLAWPWorker{
			PID: w.PID, Name: w.Name, Registered: w.Registered, LogRecords: w.LogRecords, Reported: w.Reported, Servers: w.Servers,
		})
	}
	return out
}

// worker is what a web worker hands its LLAWP link.
type worker struct {
	agent *Agent
	// sockets is the worker's pool, for Report.
	sockets func() []ipc.ServerSockets
}

// poolSockets is a pool's sockets as a Report carries them.
func poolSockets(p *pool.Pool) func() []ipc.ServerSockets {
	return func() []ipc.ServerSockets {
		st := p.Stats()
		out := make([]ipc.ServerSockets, 0, len(st.Servers))
		for _, s := range st.Servers {
			out = append(out, ipc.ServerSockets{
				Addr: s.Addr, State: s.State.String(), Open: s.Open, Busy: s.Busy, Opened: s.Opened, Requests: s.Requests,
			})
		}
		return out
	}
}

// reportEvery is how often a worker looks at its pool for a Report; it
// sends one only when something changed.
const reportEvery = time.Second

// reportSockets keeps the LLAWP's view of this worker's sockets current
// until ctx ends. A failed Report is left to the link, which notices the
// LLAWP is gone on its watch.
func reportSockets(ctx context.Context, l ipc.LLAWP, id ipc.WorkerID, sockets func() []ipc.ServerSockets, log zerolog.Logger) {
	var last []ipc.ServerSockets
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		// At most one report a tick, however busy the pool.
		now := sockets()
		if !slices.Equal(now, last) {
			rctx, cancel := context.WithTimeout(ctx, reportEvery)
			err := l.Report(rctx, id, now)
			cancel()
			if err == nil {
				last = now
			} else if ctx.Err() == nil {
				log.Debug().Err(err).Msg("Socket report to the LLAWP failed")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// statusHandler answers StatusPath and hands every other request to next.
func statusHandler(proc string, sockets func() []ipc.ServerSockets, link llawpLink, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != StatusPath {
			next.ServeHTTP(w, r)
			return
		}
		ws := WorkerStatus{Proc: proc, PID: os.Getpid(), Pool: sockets()}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if st, err := link.status(ctx); err != nil {
			ws.Error = "LLAWP: " + err.Error()
		} else {
			ws.LLAWP = llawpStatus(st)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(ws)
	})
}
