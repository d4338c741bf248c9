// Package tli is agentlab's agent <-> Policy Server wire protocol: framing,
// the handshake that shows the trusted host name in clear (as the vendor's
// does), and sealed request/response frames, one request in flight per
// socket. It does not know pools or policies; it moves messages.
package tli

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Frame types: the byte after the length.
const (
	FrameClientHello    byte = 1
	FrameServerHello    byte = 2
	FrameClientConfirm  byte = 3 // sealed
	FrameHandshakeError byte = 4
	FrameRequest        byte = 5 // sealed
	FrameResponse       byte = 6 // sealed
)

// MaxFrame bounds a frame's payload. A larger length is a protocol error
// that closes the connection: it is either garbage or an attack, and
// allocating for it would let one client hurt every other.
const MaxFrame = 1 << 20

// HeaderSize is the length word plus the type byte.
const HeaderSize = 5

// ErrFrameTooLarge is returned for a length word above MaxFrame.
var ErrFrameTooLarge = errors.New("frame larger than 1 MiB")

// FrameError describes a frame that could not be read.
type FrameError struct {
	Len int
	Err error
}

func (e *FrameError) Error() string {
	if errors.Is(e.Err, ErrFrameTooLarge) {
		return fmt.Sprintf("frame length %d: %v", e.Len, e.Err)
	}
	return "reading frame: " + e.Err.Error()
}

func (e *FrameError) Unwrap() error { return e.Err }

func frameTypeName(t byte) string {
	switch t {
	case FrameClientHello:
		return "ClientHello"
	case FrameServerHello:
		return "ServerHello"
	case FrameClientConfirm:
		return "ClientConfirm"
	case FrameHandshakeError:
		return "HandshakeError"
	case FrameRequest:
		return "Request"
	case FrameResponse:
		return "Response"
	}
	return fmt.Sprintf("unknown(%d)", t)
}

// ReadFrame reads one frame into buf (grown as needed) and returns its type
// and payload, which aliases buf. A stream that ends inside a frame gives
// io.ErrUnexpectedEOF; one that ends between frames gives io.EOF.
func ReadFrame(r io.Reader, buf []byte) (typ byte, payload []byte, err error) {
	// The header is read into buf when it fits: a local array would escape
	// through io.Reader and cost an allocation on every frame.
	hdr := buf[:0]
	if cap(hdr) < HeaderSize {
		hdr = make([]byte, 0, HeaderSize)
	}
	hdr = hdr[:HeaderSize]
	if _, err := io.ReadFull(r, hdr); err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, &FrameError{Err: err}
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	typ = hdr[4]
	if n > MaxFrame {
		return 0, nil, &FrameError{Len: int(n), Err: ErrFrameTooLarge}
	}
	buf, err = readPayload(r, buf, int(n))
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, &FrameError{Len: int(n), Err: err}
	}
	return typ, buf, nil
}

// readPayload reads n bytes into buf. When buf is too small it grows with
// the bytes that actually arrive rather than with the length word: a peer
// that announces 1 MiB and sends nothing must not cost 1 MiB per socket
// before it has even said hello.
func readPayload(r io.Reader, buf []byte, n int) ([]byte, error) {
	if cap(buf) >= n {
		buf = buf[:n]
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	buf = buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(max(len(buf), 4096), n-len(buf)))
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if len(buf) == n {
			break
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// AppendFrame appends a frame to dst, so that a frame goes out in one write.
func AppendFrame(dst []byte, typ byte, payload []byte) ([]byte, error) {
	if len(payload) > MaxFrame {
		return dst, &FrameError{Len: len(payload), Err: ErrFrameTooLarge}
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, typ)
	return append(dst, payload...), nil
}

// WriteFrame writes one frame with a single Write call.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	b, err := AppendFrame(make([]byte, 0, HeaderSize+len(payload)), typ, payload)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
