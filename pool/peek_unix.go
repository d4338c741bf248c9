//go:build unix

package pool

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// peerGone tells, without blocking and without taking any byte, whether
// the server has already closed or reset an idle socket (or sent on it
// unasked, which leaves the stream out of step just as well); nil when it
// looks usable or when the socket cannot tell. A request written to such a
// socket would be lost after it left: this is how a Login learns in time
// that it must go elsewhere.
func peerGone(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var gone error
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EWOULDBLOCK), errors.Is(rerr, syscall.EINTR):
		case rerr != nil:
			gone = rerr
		case n == 0:
			gone = io.EOF
		default:
			gone = errors.New("data arrived on an idle socket")
		}
		return true // never wait for readiness: this is a look, not a read
	})
	if err != nil {
		return err
	}
	return gone
}
