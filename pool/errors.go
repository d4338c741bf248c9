package pool

import (
	"errors"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// The errors Do returns carry one or more of these sentinels; test them with
// errors.Is, and turn them into the Agent API codes with Result.
var (
	// ErrNoConnection means the request could not be carried to or from a
	// Policy Server: every server was unavailable, the socket broke, or
	// the queue was full. The Agent API calls this NOCONNECTION (-3).
	ErrNoConnection = errors.New("pool: no connection to a policy server")

	// ErrQueueFull means MaxQueue requests were already waiting for a socket
	// of the server while all MaxSocketsPerPort sockets were busy. An error
	// that is ErrQueueFull is also ErrNoConnection.
	ErrQueueFull = errors.New("pool: too many requests waiting for a socket")

	// ErrTimeout means no answer came within the HCO's RequestTimeout (or
	// the caller's earlier deadline), queueing included. An error that is
	// ErrTimeout also wraps context.DeadlineExceeded. The Agent API calls
	// this TIMEOUT (-2).
	ErrTimeout = errors.New("pool: request timed out")

	// ErrClosed means the pool was closed before or during the request. An
	// error that is ErrClosed is also ErrNoConnection.
	ErrClosed = errors.New("pool: closed")
)

// Result maps an error from Do to the Agent API return code an agent reports
// for it: nil is SUCCESS, ErrTimeout is TIMEOUT, ErrNoConnection (and so
// ErrQueueFull and ErrClosed) is NOCONNECTION, anything else FAILURE.
func Result(err error) tlipb.Result {
	switch {
	case err == nil:
		return tlipb.Result_SUCCESS
	case errors.Is(err, ErrTimeout):
		return tlipb.Result_TIMEOUT
	case errors.Is(err, ErrNoConnection):
		return tlipb.Result_NOCONNECTION
	}
	return tlipb.Result_FAILURE
}

// poolError keeps the sentinels out of the message: a log line should read
// "pool: 300 requests already waiting for a socket to ...", not repeat the
// sentinel's own text in front of it.
type poolError struct {
	msg   string
	kinds []error
	cause error
}

func (e *poolError) Error() string {
	if e.cause == nil {
		return e.msg
	}
	return e.msg + ": " + e.cause.Error()
}

func (e *poolError) Unwrap() []error {
	if e.cause == nil {
		return e.kinds
	}
	return append(e.kinds[:len(e.kinds):len(e.kinds)], e.cause)
}

func newError(msg string, cause error, kinds ...error) error {
	return &poolError{msg: msg, kinds: kinds, cause: cause}
}
