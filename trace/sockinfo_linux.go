package trace

import (
	"encoding/binary"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tcpInfoOf asks the system what the handshake of c agreed on (TCP_INFO),
// or nil when c is no TCP socket or the system does not answer. A conn
// that wraps another says which with NetConn, as crypto/tls's does.
func tcpInfoOf(c net.Conn) *TCPInfo {
	for range 8 { // a few layers at most; never a loop
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var ti *unix.TCPInfo
	var serr error
	if err := raw.Control(func(fd uintptr) {
		ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || serr != nil {
		return nil
	}
	// struct tcp_info's tcpi_snd_wscale and tcpi_rcv_wscale are 4-bit
	// fields of the byte after tcpi_options, which x/sys's struct leaves
	// as padding: read it where the kernel wrote it. The first bit-field
	// takes the low bits on a little-endian machine, the high bits on a
	// big-endian one.
	ws := *(*uint8)(unsafe.Add(unsafe.Pointer(ti), unsafe.Offsetof(ti.Options)+1))
	snd, rcv := int(ws&0x0f), int(ws>>4)
	if bigEndian {
		snd, rcv = rcv, snd
	}
	info := &TCPInfo{
		MSS:           int(ti.Snd_mss),
		SACK:          ti.Options&tcpiOptSACK != 0,
		Timestamps:    ti.Options&tcpiOptTimestamps != 0,
		WindowScaling: ti.Options&tcpiOptWscale != 0,
		RcvWindow:     int(ti.Rcv_wnd),
	}
	if info.WindowScaling {
		info.SndWindowScale, info.RcvWindowScale = snd, rcv
	}
	return info
}

// tcpi_options bits (linux/tcp.h), which x/sys does not define.
const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
	tcpiOptWscale     = 4
)

var bigEndian = binary.NativeEndian.Uint16([]byte{0, 1}) == 1

// errnoName is the system's name of an errno: ECONNREFUSED.
func errnoName(en syscall.Errno) string {
	if name := unix.ErrnoName(en); name != "" {
		return name
	}
	return en.Error()
}
