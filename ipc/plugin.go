package ipc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentlab/agentlab/proto/llawppb"
)

// Plugin is the LLAWP's go-plugin GRPCPlugin. Impl is set on the LLAWP side
// only. net/rpc is refused on both sides.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl LLAWP
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// PluginMap is the plugin set of both sides; impl is nil on the HLA side.
func PluginMap(impl LLAWP) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &Plugin{Impl: impl}}
}

func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("ipc: the LLAWP plugin has no implementation to serve")
	}
	llawppb.RegisterLLAWPServer(s, &grpcServer{impl: p.Impl})
	return nil
}

func (p *Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewClient(c), nil
}

// NewClient is the LLAWP over an existing gRPC connection.
func NewClient(c grpc.ClientConnInterface) LLAWP {
	return &grpcClient{c: llawppb.NewLLAWPClient(c)}
}

// watchBuffer absorbs a burst of events (one poll's commands) while the
// worker's reader is busy; gRPC flow control covers the rest.
const watchBuffer = 16

// watchHeader is sent once a Watch is subscribed, so that the client can
// report an unknown worker from Watch itself rather than from the first
// receive.
const watchHeader = "llawp-watch"

type grpcClient struct {
	c llawppb.LLAWPClient
}

func (c *grpcClient) Register(ctx context.Context, w Worker) (WorkerID, error) {
	r, err := c.c.Register(ctx, &llawppb.Worker{Pid: uint32(w.PID), Name: w.Name, Role: w.Role})
	if err != nil {
		return 0, fromStatus(err)
	}
	return WorkerID(r.WorkerId), nil
}

func (c *grpcClient) Unregister(ctx context.Context, id WorkerID) error {
	_, err := c.c.Unregister(ctx, &llawppb.WorkerRef{WorkerId: uint64(id)})
	return fromStatus(err)
}

func (c *grpcClient) Log(ctx context.Context) (LogSender, error) {
	s, err := c.c.Log(ctx)
	if err != nil {
		return nil, fromStatus(err)
	}
	return &logClient{s: s}, nil
}

type logClient struct {
	s llawppb.LLAWP_LogClient
}

func (l *logClient) Send(r LogRecord) error {
	err := l.s.Send(recordToProto(r))
	if errors.Is(err, io.EOF) {
		// The stream broke; the reason is in the status, which only the
		// receiving side gets.
		_, err = l.s.CloseAndRecv()
		if err == nil {
			err = errors.New("ipc: the LLAWP closed the log stream")
		}
	}
	return fromStatus(err)
}

func (l *logClient) CloseAndSummary() (LogSummary, error) {
	s, err := l.s.CloseAndRecv()
	if err != nil {
		return LogSummary{}, fromStatus(err)
	}
	return LogSummary{Received: s.Received, Dropped: s.Dropped}, nil
}

func (c *grpcClient) Watch(ctx context.Context, id WorkerID) (<-chan ManagementEvent, error) {
	s, err := c.c.Watch(ctx, &llawppb.WorkerRef{WorkerId: uint64(id)})
	if err != nil {
		return nil, fromStatus(err)
	}
	md, err := s.Header()
	if err != nil {
		return nil, fromStatus(err)
	}
	if md.Get(watchHeader) == nil {
		// No header: the call ended before subscribing; the status says why.
		err := s.RecvMsg(new(llawppb.ManagementEvent))
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("ipc: the LLAWP ended the watch before it began")
		}
		return nil, fromStatus(err)
	}
	ch := make(chan ManagementEvent, watchBuffer)
	go func() {
		defer close(ch)
		for {
			ev, err := s.Recv()
			if err != nil {
				return
			}
			select {
			case ch <- eventFromProto(ev):
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

func (c *grpcClient) Status(ctx context.Context) (Status, error) {
	r, err := c.c.Status(ctx, &llawppb.Empty{})
	if err != nil {
		return Status{}, fromStatus(err)
	}
	return statusFromProto(r), nil
}

func (c *grpcClient) Report(ctx context.Context, id WorkerID, servers []ServerSockets) error {
	_, err := c.c.Report(ctx, &llawppb.WorkerReport{WorkerId: uint64(id), Servers: socketsToProto(servers)})
	return fromStatus(err)
}

type grpcServer struct {
	llawppb.UnimplementedLLAWPServer
	impl LLAWP
}

func (s *grpcServer) Register(ctx context.Context, w *llawppb.Worker) (*llawppb.Registered, error) {
	id, err := s.impl.Register(ctx, Worker{PID: int(w.Pid), Name: w.Name, Role: w.Role})
	if err != nil {
		return nil, toStatus(err)
	}
	return &llawppb.Registered{WorkerId: uint64(id)}, nil
}

func (s *grpcServer) Unregister(ctx context.Context, r *llawppb.WorkerRef) (*llawppb.Empty, error) {
	if err := s.impl.Unregister(ctx, WorkerID(r.WorkerId)); err != nil {
		return nil, toStatus(err)
	}
	return &llawppb.Empty{}, nil
}

func (s *grpcServer) Log(stream llawppb.LLAWP_LogServer) error {
	sender, err := s.impl.Log(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			sum, err := sender.CloseAndSummary()
			if err != nil {
				return toStatus(err)
			}
			return stream.SendAndClose(&llawppb.LogSummary{Received: sum.Received, Dropped: sum.Dropped})
		}
		if err != nil {
			// The worker went away mid-stream: what arrived is written.
			_, _ = sender.CloseAndSummary()
			return err
		}
		// A record the sink refuses is counted there, in the summary's
		// dropped; it is no reason to end the worker's stream.
		_ = sender.Send(recordFromProto(r))
	}
}

func (s *grpcServer) Watch(r *llawppb.WorkerRef, stream llawppb.LLAWP_WatchServer) error {
	ctx := stream.Context()
	ch, err := s.impl.Watch(ctx, WorkerID(r.WorkerId))
	if err != nil {
		return toStatus(err)
	}
	if err := stream.SendHeader(metadata.Pairs(watchHeader, "subscribed")); err != nil {
		return err
	}
	for ev := range ch {
		if err := stream.Send(eventToProto(ev)); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	// The worker unregistered or the LLAWP is stopping: a clean end.
	return nil
}

func (s *grpcServer) Status(ctx context.Context, _ *llawppb.Empty) (*llawppb.StatusReply, error) {
	st, err := s.impl.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return statusToProto(st), nil
}

func (s *grpcServer) Report(ctx context.Context, r *llawppb.WorkerReport) (*llawppb.Empty, error) {
	if err := s.impl.Report(ctx, WorkerID(r.WorkerId), socketsFromProto(r.Servers)); err != nil {
		return nil, toStatus(err)
	}
	return &llawppb.Empty{}, nil
}

func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnknownWorker):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}

// fromStatus gives callers errors.Is(err, ErrUnknownWorker) across the wire.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrUnknownWorker, st.Message())
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, st.Message())
	}
	return err
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func recordToProto(r LogRecord) *llawppb.LogRecord {
	return &llawppb.LogRecord{
		Time: ts(r.Time), Level: r.Level, Pid: uint32(r.PID), Tid: uint32(r.TID), Proc: r.Proc, Role: r.Role,
		Message: r.Message, Fields: r.Fields, WorkerId: uint64(r.Worker),
	}
}

func recordFromProto(r *llawppb.LogRecord) LogRecord {
	return LogRecord{
		Time: fromTS(r.Time), Level: r.Level, PID: int(r.Pid), TID: int(r.Tid), Proc: r.Proc, Role: r.Role,
		Message: r.Message, Fields: r.Fields, Worker: WorkerID(r.WorkerId),
	}
}

func eventToProto(e ManagementEvent) *llawppb.ManagementEvent {
	return &llawppb.ManagementEvent{Seq: e.Seq, Code: e.Code, Name: e.Name, Arg: e.Arg, Time: ts(e.Time), Missed: e.Missed}
}

func eventFromProto(e *llawppb.ManagementEvent) ManagementEvent {
	return ManagementEvent{Seq: e.Seq, Code: e.Code, Name: e.Name, Arg: e.Arg, Time: fromTS(e.Time), Missed: e.Missed}
}

func statusToProto(s Status) *llawppb.StatusReply {
	r := &llawppb.StatusReply{
		Pid: uint32(s.PID), Started: ts(s.Started), Uptime: durationpb.New(s.Uptime), Phase: s.Phase,
		AgentName: s.AgentName, TrustedHost: s.TrustedHost, BootstrapServer: s.BootstrapServer, HcoServers: s.HCOServers,
		Polls: s.Polls, PollsFailed: s.PollsFailed, LastPoll: ts(s.LastPoll), LastPollError: s.LastPollError,
		CommandsRelayed: s.CommandsRelayed, Aco: s.ACO, MetricsAddr: s.MetricsAddr,
	}
	for _, w := range s.Workers {
		r.Workers = append(r.Workers, &llawppb.WorkerStatus{
			WorkerId: uint64(w.ID), Pid: uint32(w.PID), Name: w.Name, Role: w.Role, Registered: ts(w.Registered),
			LogRecords: w.LogRecords, Watchers: uint32(w.Watchers), EventsDropped: w.EventsDropped,
			Servers: socketsToProto(w.Servers), Reported: ts(w.Reported),
		})
	}
	return r
}

func statusFromProto(r *llawppb.StatusReply) Status {
	s := Status{
		PID: int(r.Pid), Started: fromTS(r.Started), Uptime: r.Uptime.AsDuration(), Phase: r.Phase,
		AgentName: r.AgentName, TrustedHost: r.TrustedHost, BootstrapServer: r.BootstrapServer, HCOServers: r.HcoServers,
		Polls: r.Polls, PollsFailed: r.PollsFailed, LastPoll: fromTS(r.LastPoll), LastPollError: r.LastPollError,
		CommandsRelayed: r.CommandsRelayed, ACO: r.Aco, MetricsAddr: r.MetricsAddr,
	}
	for _, w := range r.Workers {
		s.Workers = append(s.Workers, WorkerStatus{
			ID: WorkerID(w.WorkerId), Worker: Worker{PID: int(w.Pid), Name: w.Name, Role: w.Role},
			Registered: fromTS(w.Registered), LogRecords: w.LogRecords, Watchers: int(w.Watchers), EventsDropped: w.EventsDropped,
			Servers: socketsFromProto(w.Servers), Reported: fromTS(w.Reported),
		})
	}
	return s
}

func socketsToProto(ss []ServerSockets) []*llawppb.ServerSockets {
	out := make([]*llawppb.ServerSockets, 0, len(ss))
	for _, s := range ss {
		out = append(out, &llawppb.ServerSockets{
			Addr: s.Addr, State: s.State, Open: uint32(s.Open), Busy: uint32(s.Busy), Opened: uint64(s.Opened), Requests: uint64(s.Requests),
		})
	}
	return out
}

func socketsFromProto(ss []*llawppb.ServerSockets) []ServerSockets {
	if len(ss) == 0 {
		return nil
	}
	out := make([]ServerSockets, 0, len(ss))
	for _, s := range ss {
		out = append(out, ServerSockets{
			Addr: s.Addr, State: s.State, Open: int(s.Open), Busy: int(s.Busy), Opened: int64(s.Opened), Requests: int64(s.Requests),
		})
	}
	return out
}
