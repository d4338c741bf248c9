package policyserver

// Limits told, never hung (issue 12): a connection the server will not
// take is refused at once, with the vendor's log line and a trace event
// that says why, whether the limit is the server's own (--max-conns) or
// the process's descriptors.

import (
	"context"
	"fmt"
	"os"

	"github.com/agentlab/agentlab/trace"
)

// refuse closes tc, a connection over a limit, and says so in the log and
// the trace.
func (s *Server) refuse(tc *trace.Conn, limit *trace.ConnLimit) {
	s.stats.Rejected.Add(1)
	s.cfg.Log.Warn().Str("peer", tc.RemoteAddr().String()).Int("max_conns", limit.Max).Msg(limit.Message)
	tc.Refuse(limit)
}

// holdSpare keeps a descriptor in reserve while any Serve runs.
func (s *Server) holdSpare() {
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	s.serving++
	if s.spare == nil {
		s.spare, _ = os.Open(os.DevNull) // none: accept errors back off instead
	}
}

// releaseSpare gives the reserve back when the last Serve ends.
func (s *Server) releaseSpare() {
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	if s.serving--; s.serving == 0 && s.spare != nil {
		s.spare.Close()
		s.spare = nil
	}
}

// refuseWithSpare answers an accept that failed for want of a descriptor
// (EMFILE, ENFILE): it frees the spare descriptor, accepts the waiting
// connection with it and refuses it at once, then takes the spare back.
// The vendor's server exits there (socket error 24) and is restarted;
// refusing keeps the connections it has, and the client learns at once
// instead of waiting in the backlog until its handshake times out. It
// says false when there is no spare to free.
//
// The accept after the spare is freed takes the next connection: almost
// always the one that found no descriptor, still in the backlog.
func (s *Server) refuseWithSpare(ctx context.Context, fl *faultListener, cause error) bool {
	s.spareMu.Lock()
	spare := s.spare
	s.spare = nil
	s.spareMu.Unlock()
	if spare == nil {
		return false
	}
	spare.Close()
	c, err := s.faults.accept(ctx.Done(), fl)
	if err == nil {
		msg := fmt.Sprintf("Connection request rejected: out of file descriptors with %d connections open (%v)", s.Conns(), cause)
		s.refuse(s.cfg.Recorder.Server(c, ""), &trace.ConnLimit{Max: s.Conns(), Message: msg})
	}
	s.spareMu.Lock()
	if s.spare == nil && s.serving > 0 {
		s.spare, _ = os.Open(os.DevNull)
	}
	s.spareMu.Unlock()
	return err == nil
}
