package pcapng

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// TCP reconstruction: the two ends of each connection, as the processes
// recorded them, paired into one connection, then the packets TCP sent for
// what they recorded (handshake, segments, ACKs, FIN or RST), as IPv4 or
// IPv6 packets with their checksums.

// half is one end of a connection as one process recorded it.
type half struct {
	proc, conn            string
	pid                   int
	client                bool
	local, remote         netip.AddrPort
	localStr, remoteStr   string
	localHost, remoteHost string
	evs                   []trace.Event
	// ended is the time of the process's last event, on any connection:
	// the earliest it can have ended, when it did not close this one.
	ended time.Time
}

func (h *half) label() string { return fmt.Sprintf("%s (pid %d)", h.proc, h.pid) }

// where names the half in errors: what a reader needs to find its lines.
func (h *half) where() string { return fmt.Sprintf("%s (pid %d) conn %s", h.proc, h.pid, h.conn) }

func (h *half) opened() time.Time { return h.evs[0].T }

func isSocketOp(op string) bool {
	switch op {
	case trace.OpConnect, trace.OpAccept, trace.OpSend, trace.OpReceive, trace.OpDisconnect, trace.OpReset:
		return true
	}
	return false
}

func isNoteOp(op string) bool {
	return op == trace.OpHandshake || op == trace.OpRequest || op == trace.OpResponse
}

// maxEventLen bounds one send or receive: a trace that claims more is not
// one a process of ours wrote, and the sums below must not overflow.
const maxEventLen = 1 << 30

// pcapng timestamps are nanoseconds since 1970 in 64 bits.
var minPcapTime, maxPcapTime = time.Unix(0, 0), time.Unix(0, 1<<63-1)

func evWhere(e *trace.Event) string {
	return fmt.Sprintf("%s (pid %d) conn %q, %s at %s", e.Proc, e.PID, e.Conn, e.Op, e.T.Format(time.RFC3339Nano))
}

// relSeq is the sequence number, relative to the end's initial one as
// Wireshark shows it, of the byte at offset off of what the end sends:
// its SYN takes number 0. The packets of a pcapng and the seqnum of the
// Process Monitor view both count so.
func relSeq(off int) uint32 { return uint32(off) + 1 }

func collectHalves(evs []trace.Event) ([]*half, error) {
	byKey := map[trace.End]*half{}
	var out []*half
	type proc struct {
		pid  int
		proc string
	}
	ended := map[proc]time.Time{}
	for i := range evs {
		e := &evs[i]
		if p := (proc{e.PID, e.Proc}); e.T.After(ended[p]) && !e.T.After(maxPcapTime) {
			ended[p] = e.T
		}
		if !isSocketOp(e.Op) && !isNoteOp(e.Op) {
			continue
		}
		if e.Conn == "" {
			if e.Op == trace.OpConnect && e.Local == "" {
				continue // a failed connect: no socket, no source port
			}
			if isNoteOp(e.Op) {
				continue
			}
			return nil, fmt.Errorf("%s: a socket event with no connection id", evWhere(e))
		}
		if e.T.Before(minPcapTime) || e.T.After(maxPcapTime) {
			return nil, fmt.Errorf("%s: time out of the range a pcapng can hold", evWhere(e))
		}
		if e.Len < 0 || e.Len > maxEventLen {
			return nil, fmt.Errorf("%s: length %d", evWhere(e), e.Len)
		}
		if (e.Op == trace.OpSend || e.Op == trace.OpReceive) && e.Len == 0 {
			return nil, fmt.Errorf("%s: length 0 (only sends and receives of bytes are recorded)", evWhere(e))
		}
		if e.Data != nil && len(e.Data) != e.Len {
			return nil, fmt.Errorf("%s: length %d but %d bytes of data", evWhere(e), e.Len, len(e.Data))
		}
		k := trace.EndOf(e)
		h := byKey[k]
		if h == nil {
			if e.Op != trace.OpConnect && e.Op != trace.OpAccept {
				return nil, fmt.Errorf("%s: the connection's first event, want %s or %s", evWhere(e), trace.OpConnect, trace.OpAccept)
			}
			local, err := parseEndpoint(e.Local)
			if err != nil {
				return nil, fmt.Errorf("%s: local address: %v", evWhere(e), err)
			}
			remote, err := parseEndpoint(e.Remote)
			if err != nil {
				return nil, fmt.Errorf("%s: remote address: %v", evWhere(e), err)
			}
			if local.Addr().Is4() != remote.Addr().Is4() {
				return nil, fmt.Errorf("%s: %s and %s are not of one IP version", evWhere(e), e.Local, e.Remote)
			}
			if local == remote {
				// A socket connected to itself: its two directions could
				// not be told apart in the packets.
				return nil, fmt.Errorf("%s: local and remote address are both %s", evWhere(e), e.Local)
			}
			h = &half{proc: e.Proc, pid: e.PID, conn: e.Conn, client: e.Op == trace.OpConnect,
				local: local, remote: remote, localStr: e.Local, remoteStr: e.Remote,
				localHost: e.LocalHost, remoteHost: e.RemoteHost}
			byKey[k] = h
			out = append(out, h)
		} else {
			if e.Op == trace.OpConnect || e.Op == trace.OpAccept {
				return nil, fmt.Errorf("%s: the connection was already opened at %s", evWhere(e), h.opened().Format(time.RFC3339Nano))
			}
			if e.Local != h.localStr || e.Remote != h.remoteStr {
				return nil, fmt.Errorf("%s: addresses %s -> %s, but the connection opened as %s -> %s", evWhere(e), e.Local, e.Remote, h.localStr, h.remoteStr)
			}
			if e.T.Before(h.evs[len(h.evs)-1].T) {
				return nil, fmt.Errorf("%s: earlier than the connection's previous event", evWhere(e))
			}
		}
		h.evs = append(h.evs, *e)
	}
	for _, h := range out {
		h.ended = ended[proc{h.pid, h.proc}]
	}
	return out, nil
}

func parseEndpoint(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, err
	}
	if ap.Addr().Zone() != "" {
		return ap, fmt.Errorf("%q: a zoned address has no place in an IP header", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// tcpConn is one connection: its client end and its server end, either of
// which may be missing from the trace (a process that was not traced).
type tcpConn struct {
	c, s         *half
	caddr, saddr netip.AddrPort
	t0           time.Time
}

// pairHalves matches each client end with the server end of the same
// address pair opened nearest in time: an address pair is reused once the
// first connection is gone, so the address alone does not say which.
func pairHalves(halves []*half) []*tcpConn {
	type key struct{ c, s netip.AddrPort }
	servers := map[key][]*half{}
	for _, h := range halves {
		if !h.client {
			k := key{h.remote, h.local}
			servers[k] = append(servers[k], h)
		}
	}
	used := map[*half]bool{}
	var conns []*tcpConn
	for _, h := range halves {
		if !h.client {
			continue
		}
		c := &tcpConn{c: h, caddr: h.local, saddr: h.remote, t0: h.opened()}
		var best *half
		for _, s := range servers[key{h.local, h.remote}] {
			if used[s] {
				continue
			}
			if best == nil || absDur(s.opened().Sub(h.opened())) < absDur(best.opened().Sub(h.opened())) {
				best = s
			}
		}
		if best != nil {
			used[best] = true
			c.s = best
			if best.opened().Before(c.t0) {
				c.t0 = best.opened()
			}
		}
		conns = append(conns, c)
	}
	for _, h := range halves {
		if !h.client && !used[h] {
			conns = append(conns, &tcpConn{s: h, caddr: h.remote, saddr: h.local, t0: h.opened()})
		}
	}
	slices.SortStableFunc(conns, func(a, b *tcpConn) int {
		return cmp.Or(a.t0.Compare(b.t0), a.caddr.Compare(b.caddr), a.saddr.Compare(b.saddr))
	})
	return conns
}

func (c *tcpConn) where() string {
	if c.c != nil {
		return c.c.where()
	}
	return c.s.where()
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// seg is a run of bytes that went out as one send (split at maxSegment).
type seg struct {
	off, n  int
	t       time.Time
	from    *half  // the process whose event gives the boundaries
	bySend  bool   // from's TCP Send; else the receiver's TCP Receive
	note    string // the protocol event recorded next to it
	part    int
	parts   int
	sendLen int
}

// maxSegment keeps every packet within an IPv4 packet's 65,535 bytes; the
// loopback interface's MTU (65,536) splits larger writes likewise.
const maxSegment = 65535 - 20 - 20

// stream is one direction of a connection.
type stream struct {
	from, to *half // sender and receiver; either may be nil
	src, dst netip.AddrPort
	data     []byte
	segs     []seg
}

func events(h *half, op string) []int {
	if h == nil {
		return nil
	}
	var idx []int
	for i := range h.evs {
		if h.evs[i].Op == op {
			idx = append(idx, i)
		}
	}
	return idx
}

// noteNear finds the protocol event a process recorded next to a send or
// receive of the same size: a client records its Request before the send
// and a handshake message after; a server its Response before the send.
// A handshake message is told in full (it is clear text on the wire); a
// request or response only by its kind.
func noteNear(h *half, i int) string {
	for _, j := range []int{i + 1, i - 1} {
		if j < 0 || j >= len(h.evs) {
			continue
		}
		if e := h.evs[j]; isNoteOp(e.Op) && e.Len == h.evs[i].Len {
			if e.Op != trace.OpHandshake {
				// Sealed on the wire: naming it here would give away
				// what only the key log should (wireshark/README.md).
				return e.Op + " (encrypted: the key log and wireshark/agentlab_tli.lua decode it)"
			}
			return strings.TrimSpace(e.Op + " " + e.Note)
		}
	}
	return ""
}

func buildStream(from, to *half, src, dst netip.AddrPort) (*stream, error) {
	st := &stream{from: from, to: to, src: src, dst: dst}
	sends, recvs := events(from, trace.OpSend), events(to, trace.OpReceive)
	sTotal, rTotal, avail := 0, 0, 0
	for _, i := range sends {
		sTotal += from.evs[i].Len
		avail += len(from.evs[i].Data)
	}
	for _, i := range recvs {
		rTotal += to.evs[i].Len
		avail += len(to.evs[i].Data)
	}
	total := max(sTotal, rTotal)
	who := func() string {
		s := src.String()
		if from != nil {
			s = from.where()
		}
		d := dst.String()
		if to != nil {
			d = to.where()
		}
		return s + " to " + d
	}
	// Every byte must come from some event's Data: checking the sum first
	// keeps a trace that claims huge sends from allocating them.
	if total > avail {
		return nil, fmt.Errorf("%s: %d bytes, %d of them recorded: %w", who(), total, min(avail, total), ErrNoPayload)
	}
	st.data = make([]byte, total)
	known := make([]bool, total)
	fill := func(h *half, i, off int) error {
		for k, c := range h.evs[i].Data {
			if known[off+k] && st.data[off+k] != c {
				return fmt.Errorf("%s: byte %d of the stream differs between %s's %s and the peer's record (%s)",
					who(), off+k, h.label(), h.evs[i].Op, evWhere(&h.evs[i]))
			}
			st.data[off+k], known[off+k] = c, true
		}
		return nil
	}
	off := 0
	for _, i := range sends {
		if err := fill(from, i, off); err != nil {
			return nil, err
		}
		off += from.evs[i].Len
	}
	off = 0
	for _, i := range recvs {
		if err := fill(to, i, off); err != nil {
			return nil, err
		}
		off += to.evs[i].Len
	}
	if k := slices.Index(known, false); k >= 0 {
		return nil, fmt.Errorf("%s: byte %d of %d is in no event's data: %w", who(), k, total, ErrNoPayload)
	}

	// A packet was on the wire before either end stamped it: each stamps
	// after its system call returns. The earlier stamp is the better time.
	// Sends come in stream order, so one cursor walks the receives.
	ri, rEnd := 0, 0
	if len(recvs) > 0 {
		rEnd = to.evs[recvs[0]].Len
	}
	recvAt := func(off int) (time.Time, bool) {
		for ri < len(recvs) && off >= rEnd {
			ri++
			if ri < len(recvs) {
				rEnd += to.evs[recvs[ri]].Len
			}
		}
		if ri == len(recvs) {
			return time.Time{}, false
		}
		return to.evs[recvs[ri]].T, true
	}
	off = 0
	for _, i := range sends {
		e := &from.evs[i]
		t := e.T
		if rt, ok := recvAt(off); ok && rt.Before(t) {
			t = rt
		}
		st.addSeg(seg{off: off, n: e.Len, t: t, from: from, bySend: true, note: noteNear(from, i)})
		off += e.Len
	}
	// Bytes the receiver read beyond the sender's record (the sender was
	// not traced, or died before it stamped its send) go as they arrived.
	off = 0
	for _, i := range recvs {
		e := &to.evs[i]
		if end := off + e.Len; end > sTotal {
			start := max(off, sTotal)
			st.addSeg(seg{off: start, n: end - start, t: e.T, from: to, note: noteNear(to, i)})
		}
		off += e.Len
	}
	return st, nil
}

func (st *stream) addSeg(s seg) {
	s.parts = (s.n + maxSegment - 1) / maxSegment
	s.sendLen = s.n
	for p := 0; p < s.parts; p++ {
		piece := s
		piece.part = p + 1
		piece.off = s.off + p*maxSegment
		piece.n = min(maxSegment, s.n-p*maxSegment)
		st.segs = append(st.segs, piece)
	}
}

// closing is how one half ended, from its own events.
type closing struct {
	own       *trace.Event // its own TCP Disconnect or TCP Reset
	afterRst  bool         // it had already seen the peer's RST: its close sent nothing
	readAt    int          // bytes it had read when it closed (or at all)
	peerFin   *trace.Event // it saw the peer's FIN (EOF)
	peerReset *trace.Event // it saw the peer's RST
}

func closingOf(h *half) closing {
	var c closing
	if h == nil {
		return c
	}
	read := 0
	for i := range h.evs {
		e := &h.evs[i]
		switch {
		case e.Op == trace.OpReceive:
			read += e.Len
		case e.Op == trace.OpDisconnect && e.Peer:
			if c.peerFin == nil {
				c.peerFin = e
			}
		case e.Op == trace.OpReset && e.Peer:
			if c.peerReset == nil {
				c.peerReset = e
			}
		case e.Op == trace.OpDisconnect || e.Op == trace.OpReset:
			if c.own == nil {
				c.own, c.afterRst, c.readAt = e, c.peerReset != nil, read
			}
		}
	}
	if c.own == nil {
		c.readAt = read // all it read before its trace ends
	}
	return c
}

func earlier(t time.Time, e *trace.Event) time.Time {
	if e != nil && e.T.Before(t) {
		return e.T
	}
	return t
}

// ctl is a FIN or an RST to render.
type ctl struct {
	t       time.Time
	comment string
}

// closes works out the FIN and the RST (each may be nil) that the sender
// of st put on the wire; back is the other direction, for bytes unread.
func closes(st, back *stream, who, to func(*half, netip.AddrPort) string) (fin, rst *ctl) {
	x, y := closingOf(st.from), closingOf(st.to)
	src, dst := who(st.from, st.src), to(st.to, st.dst)
	if x.own != nil && x.afterRst {
		return nil, nil // the peer's RST had ended the connection
	}
	// Bytes the sender never read make Linux reset the connection: close()
	// sends an RST instead of a FIN when they had arrived, and a closed
	// socket (closed by its process, or by the system as the process
	// died) answers bytes that arrive later with an RST. A peer that saw
	// the FIN (EOF) shows that the FIN went first.
	var late *seg
	if st.from != nil {
		for i := range back.segs {
			if s := &back.segs[i]; s.off+s.n > x.readAt {
				late = s
				break
			}
		}
	}
	lateRst := func(fin *ctl) *ctl {
		if y.peerFin != nil && late.t.Before(fin.t) {
			fin.t = late.t // the stamps say otherwise, but the FIN came first
		}
		return &ctl{late.t, fmt.Sprintf("%s's system: RST (not in its trace) for the %d bytes that arrived after its close %s",
			src, len(back.data)-max(x.readAt, late.off), dst)}
	}
	switch {
	case x.own != nil && x.own.Op == trace.OpReset:
		return nil, &ctl{earlier(x.own.T, y.peerReset), fmt.Sprintf("%s TCP Reset (RST) %s", src, dst)}
	case x.own != nil:
		if late != nil && y.peerFin == nil && !late.t.After(x.own.T) {
			return nil, &ctl{earlier(x.own.T, y.peerReset),
				fmt.Sprintf("%s TCP Disconnect with %d bytes unread: the system sent RST, not FIN %s",
					src, back.sentBefore(x.own.T)-x.readAt, dst)}
		}
		fin = &ctl{earlier(x.own.T, y.peerFin), fmt.Sprintf("%s TCP Disconnect (FIN) %s", src, dst)}
		switch {
		case late != nil:
			rst = lateRst(fin)
		case y.peerReset != nil:
			rst = &ctl{y.peerReset.T, fmt.Sprintf("%s's system: RST (not in its trace) %s as %s", src, dst, trace.NoteResetByPeer)}
		}
		return fin, rst
	}
	// The sender recorded no close of its own (not traced, or killed): the
	// receiver saw what the system sent as it closed the socket.
	resetByPeer := x.peerReset != nil || y.own != nil && y.own.Op == trace.OpReset
	if st.from != nil && y.peerFin == nil && y.peerReset == nil && !resetByPeer {
		// Nobody saw it, but a process that ends closes its sockets, and
		// its trace shows it ended: after its last event. (After an RST
		// from the peer there was nothing left to close.)
		if late != nil && !late.t.After(st.from.ended) {
			return nil, &ctl{st.from.ended, fmt.Sprintf("%s ended with %d bytes unread: its system's RST (not in its trace) %s",
				src, back.sentBefore(st.from.ended)-x.readAt, dst)}
		}
		fin = &ctl{st.from.ended, fmt.Sprintf("%s ended with the connection open: its system's FIN (not in its trace), after the process's last event %s", src, dst)}
		if late != nil {
			rst = lateRst(fin)
		}
		return fin, rst
	}
	if y.peerFin != nil {
		fin = &ctl{y.peerFin.T, fmt.Sprintf("%s: FIN (not in its trace) %s as %s", src, dst, trace.NoteClosedByPeer)}
		if late != nil {
			return fin, lateRst(fin)
		}
	}
	if y.peerReset != nil {
		rst = &ctl{y.peerReset.T, fmt.Sprintf("%s: RST (not in its trace) %s as %s", src, dst, trace.NoteResetByPeer)}
	}
	return fin, rst
}

// sentBefore is how many bytes of the stream had gone out by t.
func (st *stream) sentBefore(t time.Time) int {
	n := 0
	for _, s := range st.segs {
		if !s.t.After(t) {
			n = max(n, s.off+s.n)
		}
	}
	return n
}

// TCP flags.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

type item struct {
	t       time.Time
	dir     int
	flags   uint8
	seg     *seg
	comment string
	synOpts bool
}

func (c *tcpConn) render(nm *namer) ([]packet, error) {
	up, err := buildStream(c.c, c.s, c.caddr, c.saddr)
	if err != nil {
		return nil, err
	}
	down, err := buildStream(c.s, c.c, c.saddr, c.caddr)
	if err != nil {
		return nil, err
	}
	dirs := [2]*stream{up, down}
	ends := [2]*half{c.c, c.s}
	addrs := [2]netip.AddrPort{c.caddr, c.saddr}
	hints := [2]string{}
	// The names each end recorded for both addresses.
	if c.c != nil {
		hints[0], hints[1] = c.c.localHost, c.c.remoteHost
	}
	if c.s != nil {
		hints[0], hints[1] = cmp.Or(hints[0], c.s.remoteHost), cmp.Or(hints[1], c.s.localHost)
	}
	ep := func(d int) string { return nm.endpoint(addrs[d], hints[d]) }
	dirOf := func(a netip.AddrPort) int {
		if a == c.caddr {
			return 0
		}
		return 1
	}
	// who names a packet's sender, to its destination and receiver.
	who := func(h *half, a netip.AddrPort) string {
		if h != nil {
			return h.label()
		}
		return ep(dirOf(a)) + " (not traced)"
	}
	to := func(h *half, a netip.AddrPort) string {
		s := "→ " + ep(dirOf(a)) + "; received by "
		if h != nil {
			return s + h.label()
		}
		return s + "the peer (not traced)"
	}

	var q [2][]item
	for d, st := range dirs {
		for i := range st.segs {
			s := &st.segs[i]
			var what string
			if s.bySend {
				what = fmt.Sprintf("%s TCP Send %d bytes", s.from.label(), s.sendLen)
			} else {
				what = fmt.Sprintf("%s sent %d bytes (as %s (pid %d) read them)", who(st.from, st.src), s.sendLen, s.from.proc, s.from.pid)
			}
			if s.parts > 1 {
				what += fmt.Sprintf(", part %d of %d (%d bytes)", s.part, s.parts, s.n)
			}
			cm := what + " " + to(st.to, st.dst)
			if s.note != "" {
				cm += "; " + s.note
			}
			q[d] = append(q[d], item{t: s.t, dir: d, flags: flagACK | flagPSH, seg: s, comment: cm})
		}
		fin, rst := closes(st, dirs[1-d], who, to)
		if fin != nil {
			q[d] = append(q[d], item{t: fin.t, dir: d, flags: flagFIN | flagACK, comment: fin.comment})
		}
		if rst != nil {
			q[d] = append(q[d], item{t: rst.t, dir: d, flags: flagRST | flagACK, comment: rst.comment})
		}
	}

	isn := [2]uint32{isnOf(c, 0), isnOf(c, 1)}
	next := [2]uint32{isn[0] + relSeq(0), isn[1] + relSeq(0)} // sequence number of the next byte
	ipid := [2]uint16{uint16(isn[0] >> 16), uint16(isn[1] >> 16)}
	var out []packet
	last := c.t0
	emit := func(it item, seq, ack uint32) {
		// A connection's packets never go back in time: when two
		// processes' stamps disagree with the stream's order, the later
		// packet takes the earlier one's time.
		t := it.t
		if t.Before(last) {
			t = last
		}
		last = t
		var payload []byte
		if it.seg != nil {
			payload = dirs[it.dir].data[it.seg.off : it.seg.off+it.seg.n]
		}
		src, dst := addrs[it.dir], addrs[1-it.dir]
		out = append(out, packet{t: t, data: ipPacket(src, dst, ipid[it.dir], seq, ack, it.flags, it.synOpts, payload), comment: it.comment})
		ipid[it.dir]++
	}

	// The handshake: done by the time either end recorded the connection.
	cw, sw := who(c.c, c.caddr), who(c.s, c.saddr)
	emit(item{t: c.t0, dir: 0, flags: flagSYN, synOpts: true, comment: cw + " TCP Connect (SYN) " + to(c.s, c.saddr)}, isn[0], 0)
	emit(item{t: c.t0, dir: 1, flags: flagSYN | flagACK, synOpts: true, comment: sw + " TCP Accept (SYN, ACK) " + to(c.c, c.caddr)}, isn[1], next[0])
	emit(item{t: c.t0, dir: 0, flags: flagACK, comment: cw + " TCP Connect (ACK) " + to(c.s, c.saddr)}, next[0], next[1])

	var finSent [2]bool
	i := [2]int{}
	for i[0] < len(q[0]) || i[1] < len(q[1]) {
		// The earlier first; at one time a FIN first and an RST last: a
		// time is shared when a close's time was moved to the bytes it
		// came before, or to the bytes that drew it.
		d := 0
		switch {
		case i[0] == len(q[0]):
			d = 1
		case i[1] < len(q[1]):
			a, b := q[0][i[0]], q[1][i[1]]
			if b.t.Before(a.t) || b.t.Equal(a.t) && closeRank(b) < closeRank(a) {
				d = 1
			}
		}
		it := q[d][i[d]]
		i[d]++
		emit(it, next[d], next[1-d])
		switch {
		case it.seg != nil:
			next[d] = isn[d] + relSeq(it.seg.off+it.seg.n)
		case it.flags&flagFIN != 0:
			next[d]++
			finSent[d] = true
			if finSent[1-d] {
				// The first FIN's sender acknowledges the second.
				o := 1 - d
				emit(item{t: it.t, dir: o, flags: flagACK, comment: fmt.Sprintf("%s ACK of the FIN %s", who(ends[o], addrs[o]), to(ends[d], addrs[d]))}, next[o], next[d])
			}
		}
		if it.flags&flagRST != 0 {
			break // nothing of this connection is on the wire after an RST
		}
	}
	return out, nil
}

func closeRank(it item) int {
	switch {
	case it.flags&flagFIN != 0:
		return 0
	case it.flags&flagRST != 0:
		return 2
	}
	return 1
}

func isnOf(c *tcpConn, dir int) uint32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s %s %d %d", c.caddr, c.saddr, c.t0.UnixNano(), dir)
	return h.Sum32()
}

// ipPacket builds an IPv4 or IPv6 packet carrying one TCP segment, with
// correct checksums (Wireshark flags wrong ones).
func ipPacket(src, dst netip.AddrPort, id uint16, seq, ack uint32, flags uint8, synOpts bool, payload []byte) []byte {
	var opts []byte
	if synOpts {
		// MSS of the loopback interface and a window scale, as Linux
		// offers them: without the scale a 65,535-byte window would look
		// full after one large segment.
		opts = []byte{2, 4, byte(maxSegment >> 8), byte(maxSegment & 0xff), 1, 3, 3, 7}
	}
	tcpLen := 20 + len(opts) + len(payload)
	tcp := make([]byte, 20, tcpLen)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = byte((20 + len(opts)) / 4 << 4)
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535) // window
	tcp = append(append(tcp, opts...), payload...)

	var pseudo []byte
	var ip []byte
	if src.Addr().Is4() {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+tcpLen))
		binary.BigEndian.PutUint16(ip[4:], id)
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // don't fragment
		ip[8] = 64                                 // TTL
		ip[9] = 6                                  // TCP
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
		pseudo = append(append(append(pseudo, s4[:]...), d4[:]...), 0, 6, byte(tcpLen>>8), byte(tcpLen))
	} else {
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(tcpLen))
		ip[6] = 6  // TCP
		ip[7] = 64 // hop limit
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s16[:])
		copy(ip[24:], d16[:])
		pseudo = append(append(append(pseudo, s16[:]...), d16[:]...), 0, 0, byte(tcpLen>>8), byte(tcpLen), 0, 0, 0, 6)
	}
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, sum16(pseudo)))
	return append(ip, tcp...)
}

func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// checksum is the Internet checksum of b, continuing from a partial sum.
func checksum(b []byte, partial uint32) uint16 {
	s := partial + sum16(b)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
