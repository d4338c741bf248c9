package wireshark

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"
)

// A capture made here rather than with pcapng.Write: these tests
// choose where TCP segments start and end (a frame cut in 7-byte pieces,
// two frames in one segment), which a rendering of real sends cannot.

// segment is a TCP payload in one direction.
type segment struct {
	fromClient bool
	data       []byte
}

// tcpConn is one connection of a capture.
type tcpConn struct {
	client, server netip.AddrPort
	segs           []segment
}

const linkTypeRaw = 101 // raw IPv4, no link header

// writePcap writes conns, one after the other, as a classic pcap file with
// a three-way handshake, the segments with consistent sequence and
// acknowledgement numbers, and a FIN exchange per connection.
func writePcap(t *testing.T, path string, conns []tcpConn) {
	t.Helper()
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 65535+64)
	b = binary.LittleEndian.AppendUint32(b, linkTypeRaw)
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	packet := func(src, dst netip.AddrPort, seq, ack uint32, flags byte, payload []byte) {
		ts = ts.Add(100 * time.Microsecond)
		pkt := ipv4TCP(src, dst, seq, ack, flags, payload)
		b = binary.LittleEndian.AppendUint32(b, uint32(ts.Unix()))
		b = binary.LittleEndian.AppendUint32(b, uint32(ts.Nanosecond()/1000))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(pkt)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(pkt)))
		b = append(b, pkt...)
	}
	const syn, fin, ack, psh = 0x02, 0x01, 0x10, 0x08
	for _, c := range conns {
		cseq, sseq := uint32(1000), uint32(5000)
		packet(c.client, c.server, cseq, 0, syn, nil)
		packet(c.server, c.client, sseq, cseq+1, syn|ack, nil)
		cseq++
		sseq++
		packet(c.client, c.server, cseq, sseq, ack, nil)
		for _, s := range c.segs {
			if s.fromClient {
				packet(c.client, c.server, cseq, sseq, psh|ack, s.data)
				cseq += uint32(len(s.data))
			} else {
				packet(c.server, c.client, sseq, cseq, psh|ack, s.data)
				sseq += uint32(len(s.data))
			}
		}
		packet(c.client, c.server, cseq, sseq, fin|ack, nil)
		packet(c.server, c.client, sseq, cseq+1, fin|ack, nil)
		packet(c.client, c.server, cseq+1, sseq+1, ack, nil)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func ipv4TCP(src, dst netip.AddrPort, seq, ack uint32, flags byte, payload []byte) []byte {
	tcp := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	tcp = append(tcp, payload...)
	s, d := src.Addr().As4(), dst.Addr().As4()
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 6, byte(len(tcp)>>8), byte(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))

	ip := make([]byte, 20, 20+len(tcp))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
	ip[8] = 64
	ip[9] = 6
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, tcp...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
