package pool

import (
	"errors"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/tli"
)

// LikelyCause names, for an agent's log, the likely cause of an error from
// Do or Start: what an administrator looks at next (DOMAIN.md section 9).
// It returns "" when the error says nothing more than itself. The agent
// log says "Likely cause: " and this; an error that joins several (one
// per server tried) is named by the first cause found in the order below,
// the one most likely behind the others.
func LikelyCause(err error) string {
	var he *tli.HandshakeError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrClosed):
		return "the agent is shutting down"
	case errors.Is(err, ErrQueueFull):
		return "every socket to the Policy Server (MaxSocketsPerPort) is busy and the agent's queue of requests is full: " +
			"the Policy Server answers too slowly for the load (busy worker threads, a slow user directory)"
	case errors.Is(err, tli.ErrClosedBeforeHello),
		errors.As(err, &he) && strings.Contains(he.Message, "Connection limit"):
		return "the Policy Server refused the new connection: it is likely at its connection limit " +
			`(its log says "Connection limit of N exceeded"), often after agents piled up connections resending requests it answered too slowly`
	case errors.Is(err, ErrTimeout):
		return "the Policy Server did not answer within RequestTimeout: it is slow or overloaded " +
			"(its worker threads busy, its request queue growing, a slow user directory), or a network device dropped the connection"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the Policy Server refused the connection: it is not running or not listening on that port"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "the connection was reset: the Policy Server closed it (stopped, restarted, or its idle timeout) or a firewall dropped it"
	case errors.As(err, &he):
		return "the Policy Server refused the handshake (" + he.Message + "): check the trusted host's registration (SmHost.conf)"
	}
	return ""
}

// LogCause adds err's likely cause to ev (field "cause"), and returns it
// as the end of a log message, ". Likely cause: ...": the agent log's
// words, written once for the pool's, the HLA's and the LLAWP's lines. It
// returns "" and adds nothing when LikelyCause has nothing to say.
func LogCause(ev *zerolog.Event, err error) string {
	c := LikelyCause(err)
	if c == "" {
		return ""
	}
	ev.Str("cause", c)
	return ". Likely cause: " + c
}
