// Package pcapng renders a run's recorded TCP connections as a pcapng file
// that Wireshark opens like a capture of the loopback interface: Write
// (this file) puts together the TCP reconstruction (tcp.go) and the block
// encoding (block.go); file.go writes the file.
package pcapng

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// ErrNoPayload says that a connection's bytes are in no trace: neither the
// process that sent them nor the one that read them kept payloads.
var ErrNoPayload = errors.New("trace has no payload bytes: record with --trace-payload")

// Write renders the TCP connections of a run as a pcapng file that
// Wireshark and tshark open like a capture of the loopback interface.
//
// Everything comes from the recorded events: the connections (each seen
// from one or both of its ends: the client's TCP Connect, the server's TCP
// Accept), the bytes of each send (Data, or the receiver's when the sender
// kept none), the times, and how each side closed, a FIN for a TCP
// Disconnect and an RST for a TCP Reset, or the peer's record of it ("closed
// by peer", "reset by peer") when the closing process could not record its
// own (it was killed). What TCP itself implies around them is rendered as
// Linux sends it: the three-way handshake at the connection's first record,
// acknowledgement numbers for the bytes already on the wire, the last ACK of
// a FIN, an RST in place of a FIN from a socket closed with bytes unread or
// after a FIN for bytes that arrive later, and the FIN of a socket that a
// process's trace leaves open, which the system closed when the process
// ended (after its last event). Each packet's comment names the process and
// pid that sent it and the one that received it, and says which packets no
// process recorded.
//
// A failed connect has no packets: its trace records no source port. hosts
// (which may be nil) names the addresses, as do the host names the events
// carry.
func Write(w io.Writer, evs []trace.Event, hosts *trace.Hosts) error {
	halves, err := collectHalves(evs)
	if err != nil {
		return err
	}
	conns := pairHalves(halves)
	nm := newNamer(hosts, halves)
	var pkts []packet
	type pair struct{ a, b netip.AddrPort }
	busy := map[pair]*tcpConn{} // the last connection of each address pair
	ends := map[*tcpConn]time.Time{}
	for _, c := range conns {
		p, err := c.render(nm)
		if err != nil {
			return err
		}
		// An address pair is free again only once its connection is gone,
		// whichever end connects.
		k := pair{c.caddr, c.saddr}
		if k.b.Compare(k.a) < 0 {
			k.a, k.b = k.b, k.a
		}
		if prev := busy[k]; prev != nil && c.t0.Before(ends[prev]) {
			return fmt.Errorf("%s and %s: one address pair, %s -> %s, for two connections at once",
				prev.where(), c.where(), c.caddr, c.saddr)
		}
		busy[k], ends[c] = c, p[len(p)-1].t
		pkts = append(pkts, p...)
	}
	// Each connection's packets are already in order; across connections
	// time decides, and the stable sort keeps a connection's ties in order.
	slices.SortStableFunc(pkts, func(a, b packet) int { return a.t.Compare(b.t) })

	pw := &pcapngWriter{w: w}
	pw.sectionHeader()
	pw.interfaceDescription()
	pw.nameResolution(nm.records(hosts))
	for _, p := range pkts {
		pw.enhancedPacket(p)
	}
	return pw.err
}

// namer gives addresses their lab names: the hosts map first, then the
// names the recording processes gave them.
type namer struct {
	hosts *trace.Hosts
	byIP  map[netip.Addr]string
}

func newNamer(hosts *trace.Hosts, halves []*half) *namer {
	names := map[netip.Addr]map[string]bool{}
	add := func(a netip.AddrPort, n string) {
		if n == "" || strings.ContainsRune(n, 0) {
			return
		}
		if names[a.Addr()] == nil {
			names[a.Addr()] = map[string]bool{}
		}
		names[a.Addr()][strings.ToLower(n)] = true
	}
	for _, h := range halves {
		add(h.local, h.localHost)
		add(h.remote, h.remoteHost)
	}
	nm := &namer{hosts: hosts, byIP: map[netip.Addr]string{}}
	for ip, ns := range names {
		// One address with several names is a machine without loopback
		// aliases, where ports tell the hosts apart: no name fits it.
		if len(ns) == 1 {
			for n := range ns {
				nm.byIP[ip] = n
			}
		}
	}
	return nm
}

func (nm *namer) endpoint(a netip.AddrPort, hint string) string {
	name := cmp.Or(nm.hosts.Name(a.String()), hint, nm.byIP[a.Addr()])
	if name == "" {
		return a.String()
	}
	return trace.Endpoint(name, a.String())
}

// records are the name resolution block's entries: the hosts map's
// addresses (an IP:port entry names one socket, which the block cannot
// say), then the addresses named only by the events.
func (nm *namer) records(hosts *trace.Hosts) []nameRecord {
	var recs []nameRecord
	seen := map[netip.Addr]bool{}
	for _, e := range hosts.Entries() {
		ip, err := netip.ParseAddr(e.Addr)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if seen[ip] {
			continue
		}
		seen[ip] = true
		recs = append(recs, nameRecord{ip, e.Names})
	}
	var rest []nameRecord
	for ip, n := range nm.byIP {
		if !seen[ip] {
			rest = append(rest, nameRecord{ip, []string{n}})
		}
	}
	slices.SortFunc(rest, func(a, b nameRecord) int { return a.ip.Compare(b.ip) })
	return append(recs, rest...)
}
