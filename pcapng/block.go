package pcapng

import (
	"encoding/binary"
	"io"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// Block encoding: the pcapng file format's blocks (section header,
// interface description, name resolution, enhanced packet) and their
// options, little-endian.

// The pcapng blocks are written here by hand rather than with gopacket's
// pcapgo.NgWriter: that writer (v1.1.19) writes neither name resolution
// blocks nor packet comments, the two things that make the file read like
// the seed's capture, and the format is a handful of length-prefixed blocks.
const (
	blockSHB = 0x0A0D0D0A
	blockIDB = 0x00000001
	blockNRB = 0x00000004
	blockEPB = 0x00000006

	optEnd      = 0
	optComment  = 1
	optUserAppl = 4 // shb_userappl
	optIfName   = 2
	optIfDesc   = 3
	optTSResol  = 9

	nrbEnd  = 0
	nrbIPv4 = 1
	nrbIPv6 = 2

	// linkRaw is LINKTYPE_RAW: each packet starts with its IP header, so
	// there is no link layer to invent for the loopback interface.
	linkRaw = 101
)

type pcapngWriter struct {
	w   io.Writer
	err error
}

func (p *pcapngWriter) block(typ uint32, body []byte) {
	if p.err != nil {
		return
	}
	n := uint32(12 + len(body))
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = binary.LittleEndian.AppendUint32(b, n)
	b = append(b, body...)
	b = binary.LittleEndian.AppendUint32(b, n)
	_, p.err = p.w.Write(b)
}

func appendOpt(b []byte, code uint16, val []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(val)))
	b = append(b, val...)
	return pad4(b)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (p *pcapngWriter) sectionHeader() {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0x1A2B3C4D)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint64(b, ^uint64(0)) // section length not given
	b = appendOpt(b, optComment, []byte("Rendered by agentlab from the socket events its processes recorded (trace.jsonl), not captured: "+
		"every packet is a recorded connect, accept, send or close, and the handshakes and ACKs that TCP sends around them."))
	b = appendOpt(b, optUserAppl, []byte("agentlab"))
	b = appendOpt(b, optEnd, nil)
	p.block(blockSHB, b)
}

func (p *pcapngWriter) interfaceDescription() {
	var b []byte
	b = binary.LittleEndian.AppendUint16(b, linkRaw)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0) // snaplen: no limit
	b = appendOpt(b, optIfName, []byte("lo"))
	b = appendOpt(b, optIfDesc, []byte("loopback, as the lab's processes used it"))
	b = appendOpt(b, optTSResol, []byte{9}) // nanoseconds, as the events are stamped
	b = appendOpt(b, optEnd, nil)
	p.block(blockIDB, b)
}

type nameRecord struct {
	ip    netip.Addr
	names []string
}

func (p *pcapngWriter) nameResolution(recs []nameRecord) {
	if len(recs) == 0 {
		return
	}
	var b []byte
	for _, r := range recs {
		val := r.ip.AsSlice()
		for _, n := range r.names {
			if len(val)+len(n)+1 > maxOptLen {
				break // an option's length is 16 bits: the first names fit
			}
			val = append(append(val, n...), 0)
		}
		if len(val) == len(r.ip.AsSlice()) {
			continue
		}
		typ := uint16(nrbIPv4)
		if r.ip.Is6() {
			typ = nrbIPv6
		}
		b = appendOpt(b, typ, val)
	}
	b = appendOpt(b, nrbEnd, nil)
	p.block(blockNRB, b)
}

func (p *pcapngWriter) enhancedPacket(pk packet) {
	var b []byte
	ts := uint64(pk.t.UnixNano())
	b = binary.LittleEndian.AppendUint32(b, 0) // interface 0: lo
	b = binary.LittleEndian.AppendUint32(b, uint32(ts>>32))
	b = binary.LittleEndian.AppendUint32(b, uint32(ts))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pk.data)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pk.data)))
	b = pad4(append(b, pk.data...))
	b = appendOpt(b, optComment, optText(pk.comment))
	b = appendOpt(b, optEnd, nil)
	p.block(blockEPB, b)
}

// maxOptLen is the most an option's 16-bit length can say.
const maxOptLen = 1<<16 - 1

// optText is a comment as the format wants it: UTF-8, and short enough
// for its option, whatever notes a trace carries.
func optText(s string) []byte {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxOptLen {
		return []byte(s)
	}
	const more = "…"
	cut := maxOptLen - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return []byte(s[:cut] + more)
}

// packet is one rendered IP packet.
type packet struct {
	t       time.Time
	data    []byte
	comment string
}
