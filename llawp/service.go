package llawp

import (
	"context"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
)

// RecordWriter takes workers' log records: the Sink.
type RecordWriter interface {
	WriteRecord(ipc.LogRecord) error
}

// ServiceConfig are the parts a Service serves.
type ServiceConfig struct {
	Registry *Registry
	Records  RecordWriter
	// Log is the agent log: registrations are worth a line there.
	Log zerolog.Logger
	PID int // 0: this process
	Now func() time.Time
}

// AgentInfo is what the LLAWP learnt at startup, for Status.
type AgentInfo struct {
	AgentName       string
	TrustedHost     string
	BootstrapServer string
	HCOServers      []string
	// ACO is what the LLAWP's pool fetched: Status hands it to workers
	// that take their ACO from the LLAWP.
	ACO *conf.ACO
	// MetricsAddr is where the LLAWP serves its pool's /metrics; "" for
	// none. Status gives it to the owner, which announces it.
	MetricsAddr string
}

// Service is the LLAWP side of the ipc.LLAWP interface; ipc.Plugin serves
// it over gRPC.
type Service struct {
	cfg     ServiceConfig
	started time.Time

	mu     sync.Mutex
	agent  AgentInfo
	phase  string
	poller *Poller
}

var _ ipc.LLAWP = (*Service)(nil)

// NewService serves cfg's parts; it starts in ipc.PhaseStarting.
func NewService(cfg ServiceConfig) *Service {
	if cfg.PID == 0 {
		cfg.PID = os.Getpid()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, started: cfg.Now(), phase: ipc.PhaseStarting}
}

// SetAgent records what startup found.
func (s *Service) SetAgent(a AgentInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a.HCOServers = slices.Clone(a.HCOServers)
	s.agent = a
}

// SetPhase records where startup is.
func (s *Service) SetPhase(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = p
}

// SetPoller makes the poller's counters part of Status.
func (s *Service) SetPoller(p *Poller) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.poller = p
}

func (s *Service) Register(_ context.Context, w ipc.Worker) (ipc.WorkerID, error) {
	id := s.cfg.Registry.Register(w)
	s.cfg.Log.Info().Int("worker", int(id)).Int("worker_pid", w.PID).
		Msgf("Worker %s (pid %d) registered with the LLAWP; %d registered.", w.Name, w.PID, s.cfg.Registry.Len())
	return id, nil
}

func (s *Service) Unregister(_ context.Context, id ipc.WorkerID) error {
	w, err := s.cfg.Registry.Unregister(id)
	if err != nil {
		return err
	}
	s.cfg.Log.Info().Int("worker", int(id)).Int("worker_pid", w.PID).
		Msgf("Worker %s (pid %d) unregistered from the LLAWP; %d registered.", w.Name, w.PID, s.cfg.Registry.Len())
	return nil
}

func (s *Service) Log(context.Context) (ipc.LogSender, error) {
	return &recordStream{s: s}, nil
}

type recordStream struct {
	s   *Service
	sum ipc.LogSummary
}

func (r *recordStream) Send(rec ipc.LogRecord) error {
	r.sum.Received++
	r.s.cfg.Registry.CountLog(rec.Worker, rec.PID)
	if err := r.s.cfg.Records.WriteRecord(rec); err != nil {
		r.sum.Dropped++
		return err
	}
	return nil
}

func (r *recordStream) CloseAndSummary() (ipc.LogSummary, error) { return r.sum, nil }

func (s *Service) Watch(ctx context.Context, id ipc.WorkerID) (<-chan ipc.ManagementEvent, error) {
	return s.cfg.Registry.Watch(ctx, id)
}

func (s *Service) Report(_ context.Context, id ipc.WorkerID, servers []ipc.ServerSockets) error {
	return s.cfg.Registry.Report(id, servers)
}

func (s *Service) Status(context.Context) (ipc.Status, error) {
	s.mu.Lock()
	a, phase, p := s.agent, s.phase, s.poller
	s.mu.Unlock()
	st := ipc.Status{
		PID: s.cfg.PID, Started: s.started, Uptime: s.cfg.Now().Sub(s.started), Phase: phase,
		AgentName: a.AgentName, TrustedHost: a.TrustedHost, BootstrapServer: a.BootstrapServer,
		HCOServers: slices.Clone(a.HCOServers), Workers: s.cfg.Registry.Workers(), MetricsAddr: a.MetricsAddr,
	}
	if a.ACO != nil {
		st.ACO = a.ACO.Proto()
	}
	if p != nil {
		ps := p.Stats()
		st.Polls, st.PollsFailed, st.LastPoll, st.LastPollError, st.CommandsRelayed = ps.Polls, ps.Failed, ps.LastPoll, ps.LastError, ps.Relayed
	}
	return st, nil
}
