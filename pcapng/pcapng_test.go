package pcapng

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/trace"
	"github.com/agentlab/agentlab/trace/tracetest"
)

// pcapLab builds the events of one or more connections as the processes at
// their two ends would record them, at times given in milliseconds.
type pcapLab struct {
	t0  time.Time
	evs []trace.Event
}

// pcapEnd is one end of a connection: the process and its view of the
// addresses. noData is a process recording without payloads.
type pcapEnd struct {
	proc, conn            string
	pid                   int
	local, remote         string
	localHost, remoteHost string
	noData                bool
}

var pcapT0 = time.Date(2026, 11, 25, 22, 8, 46, 0, time.UTC)

func newPcapLab() *pcapLab { return &pcapLab{t0: pcapT0} }

func (l *pcapLab) at(ms float64) time.Time {
	return l.t0.Add(time.Duration(ms * float64(time.Millisecond)))
}

func (l *pcapLab) add(e pcapEnd, ms float64, op string, data []byte, note string) {
	ev := trace.Event{T: l.at(ms), Proc: e.proc, PID: e.pid, Op: op, Conn: e.conn, Local: e.local, Remote: e.remote,
		LocalHost: e.localHost, RemoteHost: e.remoteHost, Len: len(data), Note: note}
	if !e.noData && data != nil {
		ev.Data = data
	}
	l.evs = append(l.evs, ev)
}

func (l *pcapLab) connect(e pcapEnd, ms float64) { l.add(e, ms, trace.OpConnect, nil, "") }
func (l *pcapLab) accept(e pcapEnd, ms float64)  { l.add(e, ms, trace.OpAccept, nil, "") }
func (l *pcapLab) send(e pcapEnd, ms float64, s string) {
	l.add(e, ms, trace.OpSend, []byte(s), "")
}
func (l *pcapLab) recv(e pcapEnd, ms float64, s string) {
	l.add(e, ms, trace.OpReceive, []byte(s), "")
}
func (l *pcapLab) note(e pcapEnd, ms float64, op string, n int, note string) {
	l.add(e, ms, op, nil, note)
	l.evs[len(l.evs)-1].Len = n
}
func (l *pcapLab) close(e pcapEnd, ms float64)   { l.add(e, ms, trace.OpDisconnect, nil, "") }
func (l *pcapLab) reset(e pcapEnd, ms float64)   { l.add(e, ms, trace.OpReset, nil, "") }
func (l *pcapLab) peerFin(e pcapEnd, ms float64) { l.peer(e, ms, trace.OpDisconnect) }
func (l *pcapLab) peerRst(e pcapEnd, ms float64) { l.peer(e, ms, trace.OpReset) }

// peer is the peer's close, as this end saw it.
func (l *pcapLab) peer(e pcapEnd, ms float64, op string) {
	p := tracetest.PeerClose(op)
	l.add(e, ms, op, nil, p.Note)
	l.evs[len(l.evs)-1].Peer = p.Peer
}

// events are in time order, as Merge leaves them.
func (l *pcapLab) events() []trace.Event {
	evs := slices.Clone(l.evs)
	slices.SortStableFunc(evs, func(a, b trace.Event) int { return a.T.Compare(b.T) })
	return evs
}

// pcapEnds are the two ends of connection n of w3wp.exe (pid 100) to smps
// (pid 200) on smps1.shared.lab, from client port port (tracetest.Ends).
func pcapEnds(n, port int) (c, s pcapEnd) {
	end := func(e trace.Event) pcapEnd {
		return pcapEnd{proc: e.Proc, pid: e.PID, conn: e.Conn, local: e.Local, remote: e.Remote, localHost: e.LocalHost, remoteHost: e.RemoteHost}
	}
	ce, se := tracetest.Ends(n, port)
	return end(ce), end(se)
}

// exchange is the usual start: connect, one request and its answer.
func (l *pcapLab) exchange(c, s pcapEnd) {
	l.connect(c, 0)
	l.accept(s, 0.2)
	l.send(c, 1, "hello")
	l.recv(s, 1.2, "hello")
	l.send(s, 2, "world!")
	l.recv(c, 2.1, "world!")
}

func seedPcapHosts(t testing.TB) *trace.Hosts {
	t.Helper()
	h, err := trace.NewHosts(map[string][]string{
		"127.0.0.11": {"wa1.shared.lab"}, "127.0.0.21": {"smps1.shared.lab"}, "127.0.0.22": {"smps2.shared.lab"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// renderFlows writes the pcapng and reads it back, checking every block,
// checksum and sequence number on the way.
func renderFlows(t *testing.T, evs []trace.Event, hosts *trace.Hosts) (*pcapFile, []*flow) {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, evs, hosts); err != nil {
		t.Fatalf("WritePcapng: %v", err)
	}
	f, err := readPcapng(buf.Bytes())
	if err != nil {
		t.Fatalf("reading the pcapng back: %v", err)
	}
	flows, err := checkFlows(f.pkts)
	if err != nil {
		t.Fatalf("the packets: %v", err)
	}
	return f, flows
}

func TestWritePcapng(t *testing.T) {
	big := strings.Repeat("0123456789", 7000)
	tests := []struct {
		name  string
		build func(l *pcapLab)
		// steps per connection, in the order the connections opened.
		want [][]string
		// times (ms) of the first connection's packets, when checked.
		times []float64
		// text that the first connection's packet comments hold, by index.
		comments map[int]string
		// bytes of the first connection, client's and server's.
		data [2]string
	}{
		{
			name: "a request, its answer, the client closes",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				l.note(c, 1.01, trace.OpHandshake, 5, "ClientHello trusted host trust_wa1")
				l.note(s, 1.9, trace.OpResponse, 6, "IsProtected GET /: YES")
				l.close(c, 3)
				l.peerFin(s, 3.1)
				l.close(s, 3.2)
			},
			want:  [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s FA", "s>c FA", "c>s A"}},
			times: []float64{0, 0, 0, 1, 2, 3, 3.2, 3.2},
			comments: map[int]string{
				0: "w3wp.exe (pid 100) TCP Connect (SYN) → smps1.shared.lab:44443; received by smps (pid 200)",
				1: "smps (pid 200) TCP Accept (SYN, ACK) → wa1.shared.lab:50000; received by w3wp.exe (pid 100)",
				3: "w3wp.exe (pid 100) TCP Send 5 bytes → smps1.shared.lab:44443; received by smps (pid 200); Handshake ClientHello trusted host trust_wa1",
				4: "smps (pid 200) TCP Send 6 bytes → wa1.shared.lab:50000; received by w3wp.exe (pid 100); Response (encrypted: the key log and wireshark/agentlab_tli.lua decode it)",
				5: "w3wp.exe (pid 100) TCP Disconnect (FIN) → smps1.shared.lab:44443",
				6: "smps (pid 200) TCP Disconnect (FIN) → wa1.shared.lab:50000",
				7: "w3wp.exe (pid 100) ACK of the FIN",
			},
			data: [2]string{"hello", "world!"},
		},
		{
			name: "the bootstrap connection is reset",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				l.reset(c, 3)
				l.peerRst(s, 3.1)
				l.close(s, 3.2) // after the RST: nothing left to send
			},
			want:     [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s RA"}},
			times:    []float64{0, 0, 0, 1, 2, 3},
			comments: map[int]string{5: "w3wp.exe (pid 100) TCP Reset (RST) → smps1.shared.lab:44443; received by smps (pid 200)"},
		},
		{
			name: "the peer stamps the reset before the resetting process",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				l.peerRst(s, 3.1)
				l.close(s, 3.2)
				l.reset(c, 3.5)
			},
			want:  [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s RA"}},
			times: []float64{0, 0, 0, 1, 2, 3.1},
		},
		{
			name: "the answer is stamped by both ends before the request's sender stamps it",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.connect(c, 0.3)
				l.accept(s, 0.1)
				l.recv(s, 1.2, "hello")
				l.send(s, 1.3, "world!")
				l.send(c, 1.5, "hello")
				l.recv(c, 1.6, "world!")
				l.close(c, 2)
				l.peerFin(s, 2.1)
				l.close(s, 2.2)
			},
			want:  [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s FA", "s>c FA", "c>s A"}},
			times: []float64{0.1, 0.1, 0.1, 1.2, 1.3, 2, 2.2, 2.2},
		},
		{
			name: "the sender kept no payload: the receiver's bytes, the sender's sends",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				c.noData = true
				l.connect(c, 0)
				l.accept(s, 0.2)
				l.send(c, 1, "hel")
				l.send(c, 1.1, "lo")
				l.recv(s, 1.2, "hello")
				l.close(c, 2)
				l.peerFin(s, 2.1)
				l.close(s, 2.2)
			},
			want:     [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 3", "c>s PA 2", "c>s FA", "s>c FA", "c>s A"}},
			data:     [2]string{"hello", ""},
			comments: map[int]string{4: "w3wp.exe (pid 100) TCP Send 2 bytes"},
		},
		{
			name: "only the client is traced (agentlab probe)",
			build: func(l *pcapLab) {
				c, _ := pcapEnds(1, 50000)
				l.connect(c, 0)
				l.send(c, 1, "hello")
				l.recv(c, 2, "world!")
				l.peerFin(c, 3)
				l.close(c, 3.5)
			},
			want: [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "s>c FA", "c>s FA", "s>c A"}},
			comments: map[int]string{
				1: "smps1.shared.lab:44443 (not traced) TCP Accept (SYN, ACK) → wa1.shared.lab:50000; received by w3wp.exe (pid 100)",
				0: "w3wp.exe (pid 100) TCP Connect (SYN) → smps1.shared.lab:44443; received by the peer (not traced)",
				4: "smps1.shared.lab:44443 (not traced) sent 6 bytes (as w3wp.exe (pid 100) read them) → wa1.shared.lab:50000",
				5: "FIN (not in its trace) → wa1.shared.lab:50000; received by w3wp.exe (pid 100) as closed by peer",
			},
			data: [2]string{"hello", "world!"},
		},
		{
			name: "only the server is traced",
			build: func(l *pcapLab) {
				_, s := pcapEnds(1, 50000)
				l.accept(s, 0)
				l.recv(s, 1, "hello")
				l.send(s, 2, "world!")
				l.peerRst(s, 3)
				l.close(s, 3.1)
			},
			want: [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s RA"}},
			data: [2]string{"hello", "world!"},
		},
		{
			name: "the server was killed: the client saw its FIN",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				l.peerFin(c, 3)
				l.close(c, 3.5)
			},
			want:  [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "s>c FA", "c>s FA", "s>c A"}},
			times: []float64{0, 0, 0, 1, 2, 3, 3.5, 3.5},
		},
		{
			name: "the server was killed before a request: its system's FIN, then an RST for the request",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				// The client stamps its send before the EOF that the
				// server's FIN had already caused.
				l.send(c, 3, "again")
				l.peerFin(c, 3.01)
				l.reset(c, 3.1) // nothing left: the RST had ended it
			},
			want:  [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "s>c FA", "c>s PA 5", "s>c RA"}},
			times: []float64{0, 0, 0, 1, 2, 3, 3, 3},
			comments: map[int]string{
				5: "smps (pid 200): FIN (not in its trace) → wa1.shared.lab:50000; received by w3wp.exe (pid 100) as closed by peer",
				7: "smps (pid 200)'s system: RST (not in its trace) for the 5 bytes that arrived after its close",
			},
		},
		{
			name: "processes that ended with the connection open: their systems' FINs after their last events",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				// Each process goes on with another connection, then
				// ends (killed) without closing this one.
				c2, s2 := pcapEnds(2, 50001)
				l.connect(c2, 7)
				l.accept(s2, 7.1)
				l.reset(c2, 8)
			},
			want: [][]string{
				{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "s>c FA", "c>s FA", "s>c A"},
				{"c>s S", "s>c SA", "c>s A", "c>s RA"},
			},
			times: []float64{0, 0, 0, 1, 2, 7.1, 8, 8},
			comments: map[int]string{
				5: "smps (pid 200) ended with the connection open: its system's FIN (not in its trace), after the process's last event → wa1.shared.lab:50000; received by w3wp.exe (pid 100)",
				6: "w3wp.exe (pid 100) ended with the connection open",
			},
		},
		{
			name: "a close with bytes unread sends an RST, not a FIN",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.connect(c, 0)
				l.accept(s, 0.2)
				l.send(s, 1, "world!")
				l.close(c, 2)
				l.peerRst(s, 2.1)
				l.close(s, 2.2)
			},
			want:     [][]string{{"c>s S", "s>c SA", "c>s A", "s>c PA 6", "c>s RA"}},
			times:    []float64{0, 0, 0, 1, 2},
			comments: map[int]string{4: "w3wp.exe (pid 100) TCP Disconnect with 6 bytes unread: the system sent RST, not FIN"},
		},
		{
			name: "a close with bytes unread, the peer saw nothing",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.connect(c, 0)
				l.accept(s, 0.2)
				l.send(c, 0.5, "hi")
				l.recv(s, 0.6, "hi")
				l.send(s, 1, "world!")
				l.close(c, 2)
				l.close(s, 2.2)
			},
			want: [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 2", "s>c PA 6", "c>s RA"}},
		},
		{
			name: "data after the peer's FIN is answered with an RST",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.connect(c, 0)
				l.accept(s, 0.2)
				l.close(c, 2)
				l.send(s, 2.5, "late")
				l.peerRst(s, 2.6)
				l.close(s, 2.7)
			},
			want:     [][]string{{"c>s S", "s>c SA", "c>s A", "c>s FA", "s>c PA 4", "c>s RA"}},
			times:    []float64{0, 0, 0, 2, 2.5, 2.5},
			comments: map[int]string{5: "w3wp.exe (pid 100)'s system: RST (not in its trace) for the 4 bytes that arrived after its close"},
		},
		{
			name: "an answer to a closed socket: RST, and the answering side's close sends nothing",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.connect(c, 0)
				l.accept(s, 0.2)
				l.send(c, 1, "hello")
				l.close(c, 1.1)
				l.recv(s, 1.2, "hello")
				l.send(s, 1.3, "world!")
				l.peerFin(s, 1.4)
				l.close(s, 1.5)
			},
			want: [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "c>s FA", "s>c PA 6", "c>s RA"}},
		},
		{
			name: "a write larger than a packet",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.connect(c, 0)
				l.accept(s, 0.2)
				l.send(c, 1, big)
				l.recv(s, 1.5, big[:65536])
				l.recv(s, 1.6, big[65536:])
			},
			want:     [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 65495", "c>s PA 4505", "c>s FA", "s>c FA", "c>s A"}},
			comments: map[int]string{3: "TCP Send 70000 bytes, part 1 of 2 (65495 bytes)", 4: "part 2 of 2 (4505 bytes)"},
			data:     [2]string{big, ""},
		},
		{
			name: "a note longer than a comment can hold",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				l.note(c, 1.01, trace.OpHandshake, 5, "ClientHello trusted host "+strings.Repeat("é", 40000))
				l.reset(c, 3)
			},
			want:     [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s RA"}},
			comments: map[int]string{3: "ééé…"},
		},
		{
			name: "an address pair used twice",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.exchange(c, s)
				l.reset(c, 3)
				l.peerRst(s, 3.1)
				c2, s2 := pcapEnds(2, 50000)
				l.connect(c2, 10)
				l.accept(s2, 10.1)
				l.send(c2, 11, "again")
				l.recv(s2, 11.1, "again")
				l.close(c2, 12)
				l.peerFin(s2, 12.1)
				l.close(s2, 12.2)
			},
			want: [][]string{
				{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s RA"},
				{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "c>s FA", "s>c FA", "c>s A"},
			},
		},
		{
			name: "a failed connect has no packets",
			build: func(l *pcapLab) {
				l.evs = append(l.evs, trace.Event{T: l.at(0), Proc: "w3wp.exe", PID: 100, Op: trace.OpConnect,
					Remote: "127.0.0.22:44443", RemoteHost: "smps2.shared.lab", Note: "failed: connection refused", Error: "connection refused"})
			},
		},
		{
			name: "IPv6",
			build: func(l *pcapLab) {
				c := pcapEnd{proc: "agentlab", pid: 7, conn: "7-1", local: "[::1]:50000", remote: "[::1]:44443"}
				s := pcapEnd{proc: "smps", pid: 8, conn: "8-1", local: "[::1]:44443", remote: "[::1]:50000"}
				l.exchange(c, s)
				l.close(c, 3)
				l.peerFin(s, 3.1)
				l.close(s, 3.2)
			},
			want: [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "s>c PA 6", "c>s FA", "s>c FA", "c>s A"}},
			data: [2]string{"hello", "world!"},
		},
		{
			name: "stamps that contradict the stream keep its order",
			build: func(l *pcapLab) {
				c, s := pcapEnds(1, 50000)
				l.connect(c, 0)
				l.accept(s, 0.2)
				l.peerRst(s, 4)
				l.send(c, 5, "hello")
				l.reset(c, 6)
			},
			want:  [][]string{{"c>s S", "s>c SA", "c>s A", "c>s PA 5", "c>s RA"}},
			times: []float64{0, 0, 0, 5, 5},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newPcapLab()
			tc.build(l)
			_, flows := renderFlows(t, l.events(), seedPcapHosts(t))
			var got [][]string
			for _, f := range flows {
				got = append(got, f.steps)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("packets:\n got %q\nwant %q", got, tc.want)
			}
			if len(flows) == 0 {
				return
			}
			f := flows[0]
			if tc.times != nil {
				var ms []float64
				for _, at := range f.times {
					ms = append(ms, float64(at.Sub(pcapT0).Microseconds())/1000)
				}
				if fmt.Sprint(ms) != fmt.Sprint(tc.times) {
					t.Errorf("times (ms) %v, want %v", ms, tc.times)
				}
			}
			for i, want := range tc.comments {
				if i >= len(f.comments) || !strings.Contains(f.comments[i], want) {
					t.Errorf("comment %d is %q, want it to hold %q", i, f.comments[min(i, len(f.comments)-1)], want)
				}
			}
			if tc.data != [2]string{} && (string(f.data[0]) != tc.data[0] || string(f.data[1]) != tc.data[1]) {
				t.Errorf("bytes %.40q / %.40q, want %.40q / %.40q", f.data[0], f.data[1], tc.data[0], tc.data[1])
			}
		})
	}
}

func TestWritePcapngErrors(t *testing.T) {
	c, s := pcapEnds(1, 50000)
	tests := []struct {
		name  string
		build func(l *pcapLab)
		want  string // in the error, after the process that recorded it
		is    error
	}{
		{"no payload anywhere", func(l *pcapLab) {
			c, s := c, s
			c.noData, s.noData = true, true
			l.exchange(c, s)
		}, "w3wp.exe (pid 100) conn 100-1 to smps (pid 200) conn 200-1: 5 bytes, 0 of them recorded", ErrNoPayload},
		{"a receiver that read more than it kept", func(l *pcapLab) {
			c := c
			c.noData = true
			l.exchange(c, s)
			l.add(s, 2.05, trace.OpReceive, nil, "")
			l.evs[len(l.evs)-1].Len = 3
		}, "8 bytes, 5 of them recorded", ErrNoPayload},
		{"bytes that no event kept", func(l *pcapLab) {
			l.connect(c, 0)
			l.accept(s, 0.1)
			l.send(c, 1, "hello")
			l.add(c, 1.1, trace.OpSend, nil, "")
			l.evs[len(l.evs)-1].Len = 3
			l.recv(s, 1.2, "hello")
			l.add(s, 1.3, trace.OpReceive, nil, "")
			l.evs[len(l.evs)-1].Len = 3
		}, "byte 5 of 8 is in no event's data", ErrNoPayload},
		{"a send with no connection id", func(l *pcapLab) {
			l.evs = append(l.evs, trace.Event{T: l.at(1), Proc: "w3wp.exe", PID: 100, Op: trace.OpSend, Len: 1})
		}, `w3wp.exe (pid 100) conn "", TCP Send at 2026-11-25T22:08:46.001Z: a socket event with no connection id`, nil},
		{"a connection that starts with a send", func(l *pcapLab) {
			l.send(c, 1, "x")
		}, `w3wp.exe (pid 100) conn "100-1", TCP Send at 2026-11-25T22:08:46.001Z: the connection's first event, want TCP Connect or TCP Accept`, nil},
		{"an address that is none", func(l *pcapLab) {
			c := c
			c.local = "wa1.shared.lab:50000"
			l.connect(c, 0)
		}, `w3wp.exe (pid 100) conn "100-1", TCP Connect at 2026-11-25T22:08:46Z: local address`, nil},
		{"data of another length", func(l *pcapLab) {
			l.connect(c, 0)
			l.send(c, 1, "hello")
			l.evs[1].Len = 7
		}, "TCP Send at 2026-11-25T22:08:46.001Z: length 7 but 5 bytes of data", nil},
		{"a negative length", func(l *pcapLab) {
			l.connect(c, 0)
			l.evs[0].Len = -1
		}, "length -1", nil},
		{"a connection's events go back in time", func(l *pcapLab) {
			l.connect(c, 2)
			l.send(c, 1, "x")
			l.send(c, 0.5, "y")
		}, "earlier than the connection's previous event", nil},
		{"sender and receiver disagree", func(l *pcapLab) {
			l.connect(c, 0)
			l.accept(s, 0.1)
			l.send(c, 1, "hello")
			l.recv(s, 1.1, "hellO")
		}, "byte 4 of the stream differs", nil},
		{"no time", func(l *pcapLab) {
			l.connect(c, 0)
			l.evs[0].T = time.Time{}
		}, "time out of the range a pcapng can hold", nil},
		{"two IP versions", func(l *pcapLab) {
			c := c
			c.remote = "[::1]:44443"
			l.connect(c, 0)
		}, "are not of one IP version", nil},
		{"opened twice", func(l *pcapLab) {
			l.connect(c, 0)
			l.connect(c, 1)
		}, "the connection was already opened at 2026-11-25T22:08:46Z", nil},
		{"addresses that change", func(l *pcapLab) {
			l.connect(c, 0)
			c := c
			c.remote = "127.0.0.22:44443"
			l.send(c, 1, "x")
		}, "addresses 127.0.0.11:50000 -> 127.0.0.22:44443, but the connection opened as 127.0.0.11:50000 -> 127.0.0.21:44443", nil},
		{"one address pair for two connections at once", func(l *pcapLab) {
			c2, _ := pcapEnds(2, 50000)
			l.connect(c, 0)
			l.connect(c2, 0.5)
			l.send(c, 1, "x")
		}, "w3wp.exe (pid 100) conn 100-1 and w3wp.exe (pid 100) conn 100-2: one address pair, 127.0.0.11:50000 -> 127.0.0.21:44443, for two connections at once", nil},
		{"a zero-length send", func(l *pcapLab) {
			l.connect(c, 0)
			l.send(c, 1, "")
		}, "length 0", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newPcapLab()
			tc.build(l)
			// In the order built: some cases are about the order.
			err := Write(io.Discard, l.evs, nil)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "(pid ") {
				t.Errorf("error %q, want it to name the process and hold %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
}

func TestPcapngBlocks(t *testing.T) {
	hosts, err := trace.NewHosts(map[string][]string{
		"127.0.0.11":       {"wa1.shared.lab", "wa1"},
		"127.0.0.21":       {"smps1.shared.lab"},
		"127.0.0.1:44001":  {"smps9.shared.lab"}, // one socket: no place in the block
		"::ffff:127.0.0.5": {"mapped.shared.lab"},
	})
	if err != nil {
		t.Fatal(err)
	}
	l := newPcapLab()
	c, s := pcapEnds(1, 50000)
	l.exchange(c, s)
	// A connection to an address that only the events name.
	c2 := pcapEnd{proc: "w3wp.exe", pid: 100, conn: "100-2", local: "127.0.0.11:50001", remote: "127.0.0.33:44443",
		localHost: "wa1.shared.lab", remoteHost: "smps3.shared.lab"}
	l.connect(c2, 5)
	l.send(c2, 6, "x")
	// Two names for one address (a machine without loopback aliases): none.
	c3 := pcapEnd{proc: "w3wp.exe", pid: 100, conn: "100-3", local: "127.0.0.1:50002", remote: "127.0.0.1:44001",
		localHost: "wa9.shared.lab", remoteHost: "smps9.shared.lab"}
	l.connect(c3, 7)

	tests := []struct {
		name  string
		hosts *trace.Hosts
		want  map[string][]string
	}{
		{"with the run's hosts", hosts, map[string][]string{
			"127.0.0.11": {"wa1.shared.lab", "wa1"}, "127.0.0.21": {"smps1.shared.lab"},
			"127.0.0.5": {"mapped.shared.lab"}, "127.0.0.33": {"smps3.shared.lab"},
		}},
		{"with the events' names only", nil, map[string][]string{
			"127.0.0.11": {"wa1.shared.lab"}, "127.0.0.21": {"smps1.shared.lab"}, "127.0.0.33": {"smps3.shared.lab"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, flows := renderFlows(t, l.events(), tc.hosts)
			if f.userAppl != "agentlab" || f.linkType != linkRaw || f.ifName != "lo" || f.tsresol != 9 {
				t.Errorf("shb_userappl %q, linktype %d, if_name %q, if_tsresol %d; want agentlab, %d, lo, 9",
					f.userAppl, f.linkType, f.ifName, f.tsresol, linkRaw)
			}
			if !strings.Contains(f.shbComment, "not captured") {
				t.Errorf("the section comment %q does not say the file is rendered", f.shbComment)
			}
			got := map[string][]string{}
			for ip, ns := range f.names {
				got[ip.String()] = ns
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("name records %v, want %v", got, tc.want)
			}
			if len(flows) != 3 {
				t.Errorf("%d connections, want 3", len(flows))
			}
		})
	}
}

// pcapLoopbackIPs picks n distinct addresses in 127.0.0.0/8 that this test
// alone uses, as the e2e tests do, so that each end has its own name.
func pcapLoopbackIPs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 100 {
			t.Fatal("no free loopback address")
		}
		ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil || slices.Contains(out, ip) {
			continue
		}
		l.Close()
		out = append(out, ip)
	}
	return out
}

// TestPcapngFromRecordedSockets records real loopback connections, both
// ends, and checks that the rendering carries exactly their bytes and
// closes; with tshark on the machine, that Wireshark reads it cleanly.
func TestPcapngFromRecordedSockets(t *testing.T) {
	ips := pcapLoopbackIPs(t, 2)
	hosts, err := trace.NewHosts(map[string][]string{ips[0]: {"wa1.shared.lab"}, ips[1]: {"smps1.shared.lab"}})
	if err != nil {
		t.Fatal(err)
	}
	var cbuf, sbuf syncBuffer
	crec := trace.NewRecorder(&cbuf, trace.Options{Proc: "w3wp.exe", Host: "wa1.shared.lab", Hosts: hosts, Payload: true})
	srec := trace.NewRecorder(&sbuf, trace.Options{Proc: "smps", Host: "smps1.shared.lab", Hosts: hosts, Payload: true})
	ln, err := net.Listen("tcp", net.JoinHostPort(ips[1], "0"))
	if err != nil {
		t.Fatal(err)
	}
	tl := srec.Listen(ln, "")
	dialer, err := trace.LocalDialer(ips[0])
	if err != nil {
		t.Fatal(err)
	}

	// The server answers each message in upper case until the client
	// closes or resets, or closes first after n answers.
	var wg sync.WaitGroup
	serve := func(closeAfter int) {
		c, err := tl.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]byte, 64)
			for i := 0; closeAfter == 0 || i < closeAfter; i++ {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(bytes.ToUpper(buf[:n])); err != nil {
					return
				}
			}
		}()
	}
	ask := func(c *trace.Conn, msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	msgs := []string{"ClientHello trust_wa1", "GetHostConfig hco.smps1"}
	want := []struct {
		last  []string // the closing packets
		close func(c *trace.Conn)
		serve int
	}{
		{[]string{"c>s FA", "s>c FA", "c>s A"}, func(c *trace.Conn) {
			c.Close()
		}, 0},
		{[]string{"c>s RA"}, func(c *trace.Conn) {
			c.Reset()
		}, 0},
		{[]string{"s>c FA", "c>s FA", "s>c A"}, func(c *trace.Conn) {
			// The server closes after the second answer: wait for its FIN.
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("read after the server's close: %v, want EOF", err)
			}
			c.Close()
		}, 2},
	}
	for _, w := range want {
		go serve(w.serve)
		c, err := crec.Dial(ctx, dialer, ln.Addr().String(), trace.PhaseBootstrap)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			ask(c, m)
		}
		w.close(c)
		wg.Wait()
	}
	ln.Close()
	read := func(b []byte) []trace.Event {
		evs, err := trace.ReadEvents("trace", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	evs := append(read(cbuf.Bytes()), read(sbuf.Bytes())...)
	slices.SortStableFunc(evs, func(a, b trace.Event) int { return a.T.Compare(b.T) })

	dir := t.TempDir()
	path := filepath.Join(dir, "trace.pcapng")
	if err := Save(path, evs, hosts); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := readPcapng(data)
	if err != nil {
		t.Fatal(err)
	}
	flows, err := checkFlows(f.pkts)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != len(want) {
		t.Fatalf("%d connections, want %d", len(flows), len(want))
	}
	for i, fl := range flows {
		var sent, answered string
		for _, m := range msgs {
			sent += m
			answered += strings.ToUpper(m)
		}
		if string(fl.data[0]) != sent || string(fl.data[1]) != answered {
			t.Errorf("connection %d carries %q / %q, want %q / %q", i+1, fl.data[0], fl.data[1], sent, answered)
		}
		if got := fl.steps[len(fl.steps)-len(want[i].last):]; !slices.Equal(got, want[i].last) {
			t.Errorf("connection %d ends with %q, want %q (all: %q)", i+1, got, want[i].last, fl.steps)
		}
	}
	tsharkChecks(t, path, ips)
}

// tsharkChecks reads the file with Wireshark's own dissectors: no malformed
// packet, no bad checksum, no TCP analysis flag (retransmission, ACK of an
// unseen segment, ...), the hosts' names, the payload in the first stream.
func tsharkChecks(t *testing.T, path string, ips []string) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (scripts/install-test-deps.sh installs it): the file was checked by the test's own reader only")
	}
	tshark := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "tshark", append([]string{"-r", path}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark %q: %v\n%s", args, err, stderr.String())
		}
		return string(out)
	}
	bad := tshark("-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-Y",
		`_ws.malformed || _ws.expert.severity >= "error" || ip.checksum.status == "Bad" || tcp.checksum.status == "Bad" || tcp.analysis.flags`)
	if strings.TrimSpace(bad) != "" {
		t.Errorf("tshark flags packets:\n%s", bad)
	}
	good := tshark("-o", "tcp.check_checksum:TRUE", "-Y", `tcp.checksum.status == "Good"`)
	all := tshark()
	if n, m := strings.Count(good, "\n"), strings.Count(all, "\n"); n != m || n == 0 {
		t.Errorf("%d of %d packets have a good TCP checksum", n, m)
	}
	named := tshark("-N", "n")
	for _, name := range []string{"wa1.shared.lab", "smps1.shared.lab"} {
		if !strings.Contains(named, name) {
			t.Errorf("tshark -N n does not show %s:\n%.2000s", name, named)
		}
	}
	follow := tshark("-q", "-z", "follow,tcp,ascii,0")
	for _, want := range []string{"ClientHello trust_wa1", "CLIENTHELLO TRUST_WA1", ips[0], ips[1]} {
		if !strings.Contains(follow, want) {
			t.Errorf("follow,tcp,ascii,0 lacks %q:\n%s", want, follow)
		}
	}
	comments := tshark("-T", "fields", "-e", "frame.comment")
	if !strings.Contains(comments, "w3wp.exe (pid ") || !strings.Contains(comments, "received by smps (pid ") {
		t.Errorf("tshark shows no packet comments naming the processes:\n%.2000s", comments)
	}
}

// syncBuffer is a trace file that two goroutines' recorders may share.
type syncBuffer = testsupport.Buffer

func TestPcapngFromFile(t *testing.T) {
	l := newPcapLab()
	c, s := pcapEnds(1, 50000)
	l.exchange(c, s)
	evs := l.events()
	// The events name nothing: only a hosts file can.
	for i := range evs {
		evs[i].LocalHost, evs[i].RemoteHost = "", ""
	}
	run := t.TempDir()
	var tr bytes.Buffer
	if err := trace.WriteEvents(&tr, evs); err != nil {
		t.Fatal(err)
	}
	tracePath := filepath.Join(run, "trace.jsonl")
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(tracePath, tr.String())
	write(filepath.Join(run, trace.RunHostsFile), "127.0.0.11 wa1.shared.lab\n127.0.0.21 smps1.shared.lab\n")
	other := filepath.Join(t.TempDir(), "hosts")
	write(other, "127.0.0.11 web.other.lab\n")
	badHosts := filepath.Join(t.TempDir(), "hosts")
	write(badHosts, "127.0.0.11\n")
	badTrace := filepath.Join(t.TempDir(), "trace.jsonl")
	write(badTrace, tr.String()+"{not json}\n"+tr.String())

	tests := []struct {
		name, trace, hosts string
		names              []string // in the name records
		err                string
	}{
		{"the run's hosts file next to the trace", tracePath, "", []string{"wa1.shared.lab", "smps1.shared.lab"}, ""},
		{"a hosts file given", tracePath, other, []string{"web.other.lab"}, ""},
		{"no hosts file anywhere", filepath.Join(t.TempDir(), "trace.jsonl"), "", nil, ""},
		{"a bad hosts file", tracePath, badHosts, nil, badHosts + ":1:"},
		{"a bad trace line", badTrace, "", nil, fmt.Sprintf("%s:%d:", badTrace, strings.Count(tr.String(), "\n")+1)},
		{"no trace", filepath.Join(t.TempDir(), "none.jsonl"), "", nil, "none.jsonl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "no hosts file anywhere" {
				write(tc.trace, tr.String())
			}
			out := filepath.Join(t.TempDir(), "out.pcapng")
			err := FromFile(tc.trace, tc.hosts, out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %q", err, tc.err)
				}
				if _, serr := os.Stat(out); serr == nil {
					t.Error("a failed rendering left a file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			f, err := readPcapng(data)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range slices.SortedFunc(func(yield func(netip.Addr) bool) {
				for ip := range f.names {
					if !yield(ip) {
						return
					}
				}
			}, netip.Addr.Compare) {
				got = append(got, f.names[ip]...)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.names) {
				t.Errorf("names %q, want %q", got, tc.names)
			}
		})
	}
}

// FuzzWritePcapng renders whatever trace parses: it must never panic, and
// whatever it writes must read back as well-formed packets and streams.
func FuzzWritePcapng(f *testing.F) {
	seed := func(build func(l *pcapLab)) {
		l := newPcapLab()
		build(l)
		var b bytes.Buffer
		if err := trace.WriteEvents(&b, l.events()); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	c, s := pcapEnds(1, 50000)
	seed(func(l *pcapLab) { l.exchange(c, s); l.close(c, 3); l.peerFin(s, 3.1); l.close(s, 3.2) })
	seed(func(l *pcapLab) { l.exchange(c, s); l.reset(c, 3); l.peerRst(s, 3.1); l.close(s, 3.2) })
	seed(func(l *pcapLab) { l.connect(c, 0); l.send(c, 1, "hello"); l.recv(c, 2, "x"); l.peerFin(c, 3) })
	seed(func(l *pcapLab) {
		l.connect(c, 0)
		l.accept(s, 0.2)
		l.send(s, 1, "world!")
		l.close(c, 2)
		l.peerRst(s, 2.1)
	})
	if data, err := os.ReadFile("testdata/narrative_probe.jsonl"); err == nil {
		f.Add(data)
	}
	hosts := seedPcapHosts(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, err := trace.ReadEvents("fuzz", bytes.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := Write(&buf, evs, hosts); err != nil {
			return
		}
		pf, err := readPcapng(buf.Bytes())
		if err != nil {
			t.Fatalf("unreadable pcapng: %v", err)
		}
		if _, err := checkFlows(pf.pkts); err != nil {
			t.Fatalf("bad packets: %v", err)
		}
	})
}

// TestProcmonSeqnumIsPcapng: the seqnum of a send, a receive and a close
// is the relative sequence number of its packet in the run's pcapng, as
// Wireshark shows it, so that a row and its packet can be matched.
func TestProcmonSeqnumIsPcapng(t *testing.T) {
	l := newPcapLab()
	c, s := pcapEnds(1, 50134)
	l.exchange(c, s)
	l.send(c, 3, "GetHostConfig")
	l.recv(s, 3.1, "GetHostConfig")
	l.send(s, 4, "HCO hco.smps1, 1 server")
	l.recv(c, 4.1, "HCO hco.smps1, 1 server")
	l.reset(c, 5)
	l.peerRst(s, 5.1)
	evs := l.events()

	f, _ := renderFlows(t, evs, seedPcapHosts(t))
	isn := map[netip.AddrPort]uint32{}
	type pkt struct {
		from  netip.AddrPort
		seq   uint32
		flags uint8
		n     int
	}
	var pkts []pkt
	for _, p := range f.pkts {
		seg, err := decodeTCP(p.data)
		if err != nil {
			t.Fatal(err)
		}
		if seg.flags&flagSYN != 0 {
			isn[seg.src] = seg.seq
		}
		pkts = append(pkts, pkt{seg.src, seg.seq - isn[seg.src], seg.flags, len(seg.payload)})
	}
	for _, r := range procmon.Rows(evs, nil, procmon.Filter{}) {
		var n int
		var seq uint32
		detail := r.Cells[6]
		if _, err := fmt.Sscanf(detail[strings.Index(detail, "Length:"):], "Length: %d", &n); err != nil {
			t.Fatal(err)
		}
		i := strings.Index(detail, "seqnum: ")
		fmt.Sscanf(detail[i:], "seqnum: %d", &seq)
		// The packet's sender: this end for what it sends and its own
		// close, the peer for what it reads and a close it only saw.
		local, remote := c.local, c.remote
		if r.Cells[1] == "smps" {
			local, remote = s.local, s.remote
		}
		from := netip.MustParseAddrPort(local)
		if r.Cells[3] == "TCP Receive" || strings.Contains(detail, "received") {
			from = netip.MustParseAddrPort(remote)
		}
		var want uint8
		switch {
		case r.Cells[3] == "TCP Send" || r.Cells[3] == "TCP Receive":
			want = flagPSH
		case strings.Contains(detail, "reset"):
			want = flagRST
		default:
			continue // connect and accept: the SYNs, 0 by definition
		}
		found := false
		for _, p := range pkts {
			found = found || p.from == from && p.flags&want != 0 && p.seq == seq && (want != flagPSH || p.n == n)
		}
		if !found {
			t.Errorf("%s %s %q: no packet from %s with relative seq %d", r.Cells[1], r.Cells[3], detail, from, seq)
		}
	}
}
