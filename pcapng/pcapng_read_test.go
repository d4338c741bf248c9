package pcapng

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// A pcapng reader and a TCP/IP decoder for the tests only: they check what
// WritePcapng wrote block by block and packet by packet, independently of
// the writer's own code, and need no tool on the machine.

type pcapFile struct {
	userAppl   string
	shbComment string
	linkType   uint16
	ifName     string
	tsresol    byte
	names      map[netip.Addr][]string
	pkts       []pcapPkt
}

type pcapPkt struct {
	t       time.Time
	data    []byte
	comment string
}

func readPcapng(b []byte) (*pcapFile, error) {
	f := &pcapFile{names: map[netip.Addr][]string{}}
	le := binary.LittleEndian
	var haveSHB, haveIDB bool
	for off := 0; off < len(b); {
		if len(b)-off < 12 {
			return nil, fmt.Errorf("offset %d: %d bytes left, less than a block", off, len(b)-off)
		}
		typ, n := le.Uint32(b[off:]), int(le.Uint32(b[off+4:]))
		if n < 12 || n%4 != 0 || n > len(b)-off {
			return nil, fmt.Errorf("offset %d: block length %d", off, n)
		}
		if int(le.Uint32(b[off+n-4:])) != n {
			return nil, fmt.Errorf("offset %d: trailing length %d, leading %d", off, le.Uint32(b[off+n-4:]), n)
		}
		body := b[off+8 : off+n-4]
		switch {
		case !haveSHB && typ != blockSHB:
			return nil, fmt.Errorf("offset %d: first block %#x, want a section header", off, typ)
		case typ == blockSHB:
			if haveSHB {
				return nil, fmt.Errorf("offset %d: a second section", off)
			}
			if len(body) < 16 || le.Uint32(body) != 0x1A2B3C4D {
				return nil, fmt.Errorf("section header: not little-endian pcapng")
			}
			if le.Uint16(body[4:]) != 1 || le.Uint16(body[6:]) != 0 {
				return nil, fmt.Errorf("section header: version %d.%d", le.Uint16(body[4:]), le.Uint16(body[6:]))
			}
			opts, err := readOpts(body[16:])
			if err != nil {
				return nil, fmt.Errorf("section header: %v", err)
			}
			f.userAppl, f.shbComment = string(opts[optUserAppl]), string(opts[optComment])
			haveSHB = true
		case typ == blockIDB:
			if haveIDB {
				return nil, fmt.Errorf("a second interface")
			}
			if len(body) < 8 {
				return nil, fmt.Errorf("interface block of %d bytes", len(body))
			}
			f.linkType = le.Uint16(body)
			opts, err := readOpts(body[8:])
			if err != nil {
				return nil, fmt.Errorf("interface: %v", err)
			}
			f.ifName = string(opts[optIfName])
			f.tsresol = 6 // the format's default: microseconds
			if r := opts[optTSResol]; len(r) == 1 {
				f.tsresol = r[0]
			}
			haveIDB = true
		case typ == blockNRB:
			if err := readNRB(body, f.names); err != nil {
				return nil, fmt.Errorf("name resolution: %v", err)
			}
		case typ == blockEPB:
			if !haveIDB {
				return nil, errors.New("a packet before its interface")
			}
			if len(body) < 20 {
				return nil, fmt.Errorf("packet block of %d bytes", len(body))
			}
			if le.Uint32(body) != 0 {
				return nil, fmt.Errorf("packet on interface %d", le.Uint32(body))
			}
			ts := uint64(le.Uint32(body[4:]))<<32 | uint64(le.Uint32(body[8:]))
			capLen, origLen := int(le.Uint32(body[12:])), int(le.Uint32(body[16:]))
			if capLen != origLen || capLen > len(body)-20 {
				return nil, fmt.Errorf("packet of %d bytes, %d captured, %d in the block", origLen, capLen, len(body)-20)
			}
			data := body[20 : 20+capLen]
			opts, err := readOpts(body[20+(capLen+3)/4*4:])
			if err != nil {
				return nil, fmt.Errorf("packet %d: %v", len(f.pkts)+1, err)
			}
			if f.tsresol != 9 {
				return nil, fmt.Errorf("time resolution %d, this reader knows nanoseconds", f.tsresol)
			}
			f.pkts = append(f.pkts, pcapPkt{t: time.Unix(0, int64(ts)), data: data, comment: string(opts[optComment])})
		default:
			return nil, fmt.Errorf("offset %d: unexpected block %#x", off, typ)
		}
		off += n
	}
	if !haveSHB || !haveIDB {
		return nil, errors.New("no section header or no interface")
	}
	return f, nil
}

// readOpts reads options up to opt_endofopt; each code at most once.
func readOpts(b []byte) (map[uint16][]byte, error) {
	opts := map[uint16][]byte{}
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%d bytes of an option", len(b))
		}
		code, n := binary.LittleEndian.Uint16(b), int(binary.LittleEndian.Uint16(b[2:]))
		if code == optEnd {
			if n != 0 || len(b) != 4 {
				return nil, fmt.Errorf("end of options with %d bytes after it", len(b)-4)
			}
			return opts, nil
		}
		padded := (n + 3) / 4 * 4
		if 4+padded > len(b) {
			return nil, fmt.Errorf("option %d of %d bytes overruns its block", code, n)
		}
		if _, dup := opts[code]; dup {
			return nil, fmt.Errorf("option %d twice", code)
		}
		opts[code] = b[4 : 4+n]
		b = b[4+padded:]
	}
	return nil, errors.New("options without an end")
}

func readNRB(b []byte, names map[netip.Addr][]string) error {
	for {
		if len(b) < 4 {
			return errors.New("records without an end")
		}
		typ, n := binary.LittleEndian.Uint16(b), int(binary.LittleEndian.Uint16(b[2:]))
		padded := (n + 3) / 4 * 4
		if 4+padded > len(b) {
			return fmt.Errorf("record of %d bytes overruns the block", n)
		}
		v := b[4 : 4+n]
		b = b[4+padded:]
		var size int
		switch typ {
		case nrbEnd:
			if len(b) != 0 {
				return fmt.Errorf("%d bytes after the end record (this writer adds no options)", len(b))
			}
			return nil
		case nrbIPv4:
			size = 4
		case nrbIPv6:
			size = 16
		default:
			return fmt.Errorf("record type %d", typ)
		}
		if len(v) <= size || v[len(v)-1] != 0 {
			return fmt.Errorf("record of %d bytes: no NUL-terminated name", len(v))
		}
		ip, _ := netip.AddrFromSlice(v[:size])
		names[ip] = strings.Split(string(v[size:len(v)-1]), "\x00")
	}
}

// tcpSeg is one decoded packet.
type tcpSeg struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	payload  []byte
	opts     []byte
}

// decodeTCP decodes a raw IP packet and checks its lengths and checksums.
func decodeTCP(b []byte) (tcpSeg, error) {
	var s tcpSeg
	var tcp, pseudo []byte
	be := binary.BigEndian
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0xf) * 4
		if ihl != 20 || int(be.Uint16(b[2:])) != len(b) {
			return s, fmt.Errorf("IPv4 header of %d bytes, total length %d of %d", ihl, be.Uint16(b[2:]), len(b))
		}
		if b[9] != 6 {
			return s, fmt.Errorf("IP protocol %d", b[9])
		}
		if checksum(b[:20], 0) != 0 {
			return s, errors.New("bad IPv4 header checksum")
		}
		src, _ := netip.AddrFromSlice(b[12:16])
		dst, _ := netip.AddrFromSlice(b[16:20])
		tcp = b[20:]
		s.src, s.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		pseudo = append(append(append(pseudo, b[12:20]...), 0, 6), byte(len(tcp)>>8), byte(len(tcp)))
	case len(b) >= 40 && b[0]>>4 == 6:
		if int(be.Uint16(b[4:])) != len(b)-40 || b[6] != 6 {
			return s, fmt.Errorf("IPv6 payload length %d of %d, next header %d", be.Uint16(b[4:]), len(b)-40, b[6])
		}
		src, _ := netip.AddrFromSlice(b[8:24])
		dst, _ := netip.AddrFromSlice(b[24:40])
		tcp = b[40:]
		s.src, s.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		pseudo = append(append(pseudo, b[8:40]...), 0, 0, byte(len(tcp)>>8), byte(len(tcp)), 0, 0, 0, 6)
	default:
		return s, fmt.Errorf("not an IP packet (%d bytes)", len(b))
	}
	if len(tcp) < 20 {
		return s, fmt.Errorf("TCP header of %d bytes", len(tcp))
	}
	hl := int(tcp[12]>>4) * 4
	if hl < 20 || hl > len(tcp) {
		return s, fmt.Errorf("TCP data offset %d of %d", hl, len(tcp))
	}
	if checksum(tcp, sum16(pseudo)) != 0 {
		return s, errors.New("bad TCP checksum")
	}
	s.src = netip.AddrPortFrom(s.src.Addr(), be.Uint16(tcp))
	s.dst = netip.AddrPortFrom(s.dst.Addr(), be.Uint16(tcp[2:]))
	s.seq, s.ack, s.flags = be.Uint32(tcp[4:]), be.Uint32(tcp[8:]), tcp[13]
	s.opts, s.payload = tcp[20:hl], tcp[hl:]
	return s, nil
}

func flagString(f uint8) string {
	var b strings.Builder
	for _, x := range []struct {
		bit uint8
		c   byte
	}{{flagSYN, 'S'}, {flagFIN, 'F'}, {flagRST, 'R'}, {flagPSH, 'P'}, {flagACK, 'A'}} {
		if f&x.bit != 0 {
			b.WriteByte(x.c)
		}
	}
	return b.String()
}

// flow is one connection as the packets show it.
type flow struct {
	client, server netip.AddrPort
	steps          []string // "c>s S", "s>c PA 5", ...
	times          []time.Time
	comments       []string
	data           [2][]byte // bytes from the client, from the server
}

// checkFlows follows every connection through the packets and checks what a
// capture of Linux's TCP would show: a handshake first, sequence numbers
// without gaps or repeats, each ACK acknowledging every byte (and FIN) the
// other side had put on the wire, nothing after an RST, and time order.
func checkFlows(pkts []pcapPkt) ([]*flow, error) {
	type state struct {
		f     *flow
		next  [2]uint32 // next sequence number per direction
		synAt [2]bool
		reset bool
		fin   [2]bool
	}
	conns := map[[2]netip.AddrPort]*state{}
	var order []*flow
	var last time.Time
	for i, p := range pkts {
		if p.t.Before(last) {
			return nil, fmt.Errorf("packet %d goes back in time", i+1)
		}
		last = p.t
		s, err := decodeTCP(p.data)
		if err != nil {
			return nil, fmt.Errorf("packet %d: %v", i+1, err)
		}
		if p.comment == "" {
			return nil, fmt.Errorf("packet %d has no comment", i+1)
		}
		st := conns[[2]netip.AddrPort{s.src, s.dst}]
		dir := 0
		if st == nil {
			if st = conns[[2]netip.AddrPort{s.dst, s.src}]; st != nil {
				dir = 1
			}
		}
		if st != nil && s.flags == flagSYN {
			// A new connection on the same address pair: the previous one
			// ended, if not on the wire shown, then in the kernel.
			delete(conns, [2]netip.AddrPort{st.f.client, st.f.server})
			st = nil
		}
		if st == nil {
			if s.flags != flagSYN {
				return nil, fmt.Errorf("packet %d: %s from %s starts no connection", i+1, flagString(s.flags), s.src)
			}
			st = &state{f: &flow{client: s.src, server: s.dst}}
			st.next[0], st.synAt[0] = s.seq+1, true
			conns[[2]netip.AddrPort{s.src, s.dst}] = st
			order = append(order, st.f)
			st.f.steps = append(st.f.steps, "c>s S")
			st.f.times = append(st.f.times, p.t)
			st.f.comments = append(st.f.comments, p.comment)
			continue
		}
		name := [2]string{"c>s", "s>c"}[dir]
		step := name + " " + flagString(s.flags)
		if len(s.payload) > 0 {
			step += fmt.Sprintf(" %d", len(s.payload))
		}
		switch {
		case st.reset:
			return nil, fmt.Errorf("packet %d: %s after the connection's RST", i+1, step)
		case dir == 1 && !st.synAt[1]:
			if s.flags != flagSYN|flagACK || s.ack != st.next[0] {
				return nil, fmt.Errorf("packet %d: %s (ack %d), want the SYN-ACK of %d", i+1, step, s.ack, st.next[0])
			}
			st.next[1], st.synAt[1] = s.seq+1, true
		case !st.synAt[1]:
			return nil, fmt.Errorf("packet %d: %s before the SYN-ACK", i+1, step)
		case s.flags&flagSYN != 0:
			return nil, fmt.Errorf("packet %d: a second SYN", i+1)
		default:
			if s.seq != st.next[dir] {
				return nil, fmt.Errorf("packet %d: %s seq %d, want %d", i+1, step, s.seq, st.next[dir])
			}
			if s.flags&flagACK == 0 || s.ack != st.next[1-dir] {
				return nil, fmt.Errorf("packet %d: %s ack %d, want %d (all the other side sent)", i+1, step, s.ack, st.next[1-dir])
			}
			if st.fin[dir] && (len(s.payload) > 0 || s.flags&flagFIN != 0) {
				return nil, fmt.Errorf("packet %d: %s after this side's FIN", i+1, step)
			}
			st.next[dir] += uint32(len(s.payload))
			st.f.data[dir] = append(st.f.data[dir], s.payload...)
			if s.flags&flagFIN != 0 {
				st.next[dir]++
				st.fin[dir] = true
			}
			if s.flags&flagRST != 0 {
				st.reset = true
			}
		}
		st.f.steps = append(st.f.steps, step)
		st.f.times = append(st.f.times, p.t)
		st.f.comments = append(st.f.comments, p.comment)
	}
	return order, nil
}
