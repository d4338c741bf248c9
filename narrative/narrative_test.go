package narrative

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
	"github.com/agentlab/agentlab/trace/tracetest"
)

func narrText(t *testing.T, steps []Step) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, steps); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func narrCheck(t *testing.T, evs []trace.Event, want ...string) []Step {
	t.Helper()
	steps := Narrate(evs, "wa1.shared.lab", tracetest.Servers)
	got := narrText(t, steps)
	w := ""
	for _, s := range want {
		w += s + "\n"
	}
	if got != w {
		t.Errorf("narrative:\n%s\nwant:\n%s", got, w)
	}
	for i, s := range steps {
		if s.N != i+1 {
			t.Errorf("step %d numbered %d", i+1, s.N)
		}
		if s.First.After(s.Last) {
			t.Errorf("step %d: first %v after last %v", s.N, s.First, s.Last)
		}
	}
	narrFromEvents(t, evs, steps)
	return steps
}

var narrNumber = regexp.MustCompile(`\b\d{4,5}\b`)
var narrEndpoint = regexp.MustCompile(`[a-z0-9.]+\.shared\.lab:\d+`)

// narrFromEvents checks that nothing is invented: each port, pid and
// server:port in a sentence is in some event.
func narrFromEvents(t *testing.T, evs []trace.Event, steps []Step) {
	t.Helper()
	known := map[string]bool{}
	for _, e := range evs {
		known[strconv.Itoa(e.PID)] = true
		known[Port(e.Local)] = true
		known[Port(e.Remote)] = true
		for _, m := range narrNumber.FindAllString(e.Note, -1) {
			known[m] = true
		}
		known[trace.Endpoint(e.RemoteHost, e.Remote)] = true
	}
	for _, s := range steps {
		text := regexp.MustCompile(`\d\d:\d\d:\d\d\.\d{3}`).ReplaceAllString(s.Text, "")
		for _, m := range append(narrNumber.FindAllString(text, -1), narrEndpoint.FindAllString(text, -1)...) {
			if !known[m] {
				t.Errorf("step %d mentions %s, which no event has: %s", s.N, m, s.Text)
			}
		}
	}
}

func TestNarrateIIS(t *testing.T) {
	evs := tracetest.IIS()
	before := slices.Clone(evs)
	steps := narrCheck(t, evs,
		"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: w3wp.exe (pid 4242) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50135 and 50136, and downloads ACO aco.wa1 over the first (port 50135).",
		"Step 3: LLAWP.exe (pid 4250) connects to smps2.shared.lab:44443 using tcp port 50137, downloads HCO hco.smps1 and resets the connection.",
		"Step 4: LLAWP.exe (pid 4250) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50138 and 50139, downloads ACO aco.wa1 over the first (port 50138) and sends SetAgentInfo wa1.",
		// The LLAWP polls once as soon as it is ready, before the first page
		// load: the steps are numbered in time order.
		"Step 5: LLAWP.exe sends DoManagement to smps1.shared.lab:44443 every 5.0 s (4 polls) over port 50138.",
		"Step 6: w3wp.exe sends 10 IsProtected, 4 Login and 10 Authorize requests to smps1.shared.lab:44443 over ports 50135 and 50136.",
	)
	if !reflect.DeepEqual(evs, before) {
		t.Error("Narrate changed its input")
	}
	want := []struct {
		proc  string
		pid   int
		phase string
		conns []string
	}{
		{"w3wp.exe", 4242, trace.PhaseBootstrap, []string{"4242-1"}},
		{"w3wp.exe", 4242, trace.PhaseHCO, []string{"4242-2", "4242-3"}},
		{"LLAWP.exe", 4250, trace.PhaseBootstrap, []string{"4250-1"}},
		{"LLAWP.exe", 4250, trace.PhaseHCO, []string{"4250-2", "4250-3"}},
		{"LLAWP.exe", 4250, trace.PhaseManagement, []string{"4250-2"}},
		{"w3wp.exe", 4242, trace.PhaseRequests, []string{"4242-2", "4242-3"}},
	}
	for i, w := range want {
		if i >= len(steps) {
			break
		}
		s := steps[i]
		if s.Proc != w.proc || s.PID != w.pid || s.Phase != w.phase || !slices.Equal(s.Conns, w.conns) {
			t.Errorf("step %d: %s %d %s %v, want %s %d %s %v", s.N, s.Proc, s.PID, s.Phase, s.Conns, w.proc, w.pid, w.phase, w.conns)
		}
	}
	// Step 1 spans its connect to its reset: 12 events of the agent's,
	// one millisecond apart.
	if len(steps) > 0 {
		if s := steps[0]; !s.First.Equal(tracetest.Start) || s.Last.Sub(s.First) != 11*time.Millisecond {
			t.Errorf("step 1 spans %v .. %v", s.First, s.Last)
		}
	}
	// Polls: the first at its own time, the last 15.1 s later.
	if len(steps) > 4 {
		if s := steps[4]; s.Last.Sub(s.First) < 15*time.Second {
			t.Errorf("step 5 spans %v", s.Last.Sub(s.First))
		}
	}

	// The same input tells the same story, and the order of a merged
	// trace's lines with equal times does not change it.
	again := Narrate(slices.Clone(evs), "wa1.shared.lab", tracetest.Servers)
	if !reflect.DeepEqual(steps, again) {
		t.Error("Narrate is not deterministic")
	}
	// Host and server names are matched as the table's filter matches them.
	upper := Narrate(evs, "WA1.SHARED.LAB", []string{"SMPS1.shared.lab", "smps2.SHARED.lab"})
	if !reflect.DeepEqual(steps, upper) {
		t.Error("host names are case-sensitive")
	}
}

func TestNarrateBootstrapFailures(t *testing.T) {
	t.Run("refused then good", func(t *testing.T) {
		l := tracetest.NewLab()
		l.Fail("w3wp.exe", 4242, "smps3.shared.lab", trace.PhaseBootstrap, "connect: connection refused")
		l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
		l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
		narrCheck(t, l.Events,
			"Step 1: w3wp.exe (pid 4242) tries smps3.shared.lab:44443 first: connection refused; then connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
			"Step 2: w3wp.exe (pid 4242) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50135 and 50136, and downloads ACO aco.wa1 over the first (port 50135).",
		)
	})
	t.Run("handshake refused then good", func(t *testing.T) {
		l := tracetest.NewLab()
		c := l.Open("w3wp.exe", 4242, 50133, "smps3.shared.lab", trace.PhaseBootstrap)
		l.Emit(c, trace.OpSend, 70, "")
		l.Record(c, tracetest.Handshake(trace.HandshakeClientHello, "ClientHello trusted host trust_wa1"), 70)
		l.Emit(c, trace.OpReceive, 60, "")
		l.Record(c, tracetest.Refused(3154, "Shared secret incorrect for this client"), 60)
		l.Close(c)
		l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
		narrCheck(t, l.Events,
			"Step 1: w3wp.exe (pid 4242) connects to smps3.shared.lab:44443 using tcp port 50133, is refused in the handshake (3154 Shared secret incorrect for this client) and closes the connection.",
			"Step 2: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		)
	})
	t.Run("no server answers", func(t *testing.T) {
		l := tracetest.NewLab()
		l.Fail("w3wp.exe", 4242, "smps3.shared.lab", trace.PhaseBootstrap, "connect: connection refused")
		l.Fail("w3wp.exe", 4242, "smps3.shared.lab", trace.PhaseBootstrap, "connect: connection refused")
		l.Fail("w3wp.exe", 4242, "smps2.shared.lab", trace.PhaseBootstrap, "i/o timeout")
		narrCheck(t, l.Events,
			"Step 1: w3wp.exe (pid 4242) tries smps3.shared.lab:44443: connection refused (2 times); then smps2.shared.lab:44443: i/o timeout.",
		)
	})
	t.Run("no such HCO", func(t *testing.T) {
		l := tracetest.NewLab()
		c := l.Connect("w3wp.exe", 4242, 50134, "smps2.shared.lab", trace.PhaseBootstrap)
		l.Do(c, "GetHostConfig hco.nope", "FAILURE - no host configuration object hco.nope")
		l.Reset(c)
		narrCheck(t, l.Events,
			"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, asks for HCO hco.nope but gets FAILURE (no host configuration object hco.nope) and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		)
	})
	t.Run("killed mid-bootstrap", func(t *testing.T) {
		l := tracetest.NewLab()
		c := l.Connect("w3wp.exe", 4242, 50134, "smps2.shared.lab", trace.PhaseBootstrap)
		l.Send(c, "GetHostConfig hco.smps1")
		narrCheck(t, l.Events,
			"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, asks for HCO hco.smps1 with no response recorded and the trace ends with the connection still open.",
		)
	})
	t.Run("server closes", func(t *testing.T) {
		l := tracetest.NewLab()
		c := l.Connect("w3wp.exe", 4242, 50134, "smps2.shared.lab", trace.PhaseBootstrap)
		l.Peer(c, trace.OpDisconnect)
		l.Close(c)
		l.Fail("w3wp.exe", 4242, "smps1.shared.lab", trace.PhaseHCO, "connect: connection refused")
		narrCheck(t, l.Events,
			"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134 and the server closes the connection.",
			"Step 2: w3wp.exe (pid 4242) tries smps1.shared.lab:44443: connection refused.",
		)
	})
}

// TestNarrateSocketGrowth: with both sockets busy the agent adds
// NewSocketStep more, then more again; a pooled socket reset after an error
// and a server going away are told with their times.
func TestNarrateSocketGrowth(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	pool := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	tracetest.SetPhase(trace.PhaseRequests, pool...)
	const isp = "IsProtected GET /protected/"
	l.Do(pool[0], isp, "YES")
	l.Do(pool[1], isp, "YES")

	// Both busy: two more.
	l.Send(pool[0], isp)
	l.Send(pool[1], isp)
	pool = append(pool, l.Connect("w3wp.exe", 4242, 50137, "smps1.shared.lab", trace.PhaseRequests))
	pool = append(pool, l.Connect("w3wp.exe", 4242, 50138, "smps1.shared.lab", trace.PhaseRequests))
	l.Send(pool[2], isp)
	l.Send(pool[3], isp)
	// All four busy: two more.
	pool = append(pool, l.Connect("w3wp.exe", 4242, 50139, "smps1.shared.lab", trace.PhaseRequests))
	pool = append(pool, l.Connect("w3wp.exe", 4242, 50140, "smps1.shared.lab", trace.PhaseRequests))
	l.Do(pool[4], isp, "YES")
	for _, c := range pool[1:4] {
		l.Answer(c, isp, "YES")
	}

	// The first socket's request times out: the agent resets it and
	// closes the one of the same age.
	l.Jump("23:24:10")
	l.Reset(pool[0])
	l.Close(pool[1])
	// A refill while the others are idle is not NewSocketStep's doing.
	pool = append(pool, l.Connect("w3wp.exe", 4242, 50141, "smps1.shared.lab", trace.PhaseRequests))
	l.Do(pool[6], isp, "NO")

	// The server goes away.
	l.Jump("23:25:00")
	for _, c := range pool[2:] {
		l.Peer(c, trace.OpDisconnect)
		l.Close(c)
	}
	l.Fail("w3wp.exe", 4242, "smps1.shared.lab", trace.PhaseRequests, "connect: connection refused")
	l.Fail("w3wp.exe", 4242, "smps1.shared.lab", trace.PhaseRequests, "connect: connection refused")

	narrCheck(t, l.Events,
		"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: w3wp.exe (pid 4242) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50135 and 50136, and downloads ACO aco.wa1 over the first (port 50135).",
		"Step 3: w3wp.exe sends 8 IsProtected requests to smps1.shared.lab:44443 over ports 50135 and 50136; 1 got no recorded response; it opened 2 more sockets (ports 50137 and 50138) when both were busy (NewSocketStep), 2 more (ports 50139 and 50140) when all 4 were busy and 1 more (port 50141).",
		"Step 4: at 23:24:10.000, w3wp.exe (pid 4242) resets its connection to smps1.shared.lab:44443 (port 50135), with IsProtected GET /protected/ unanswered.",
		"Step 5: at 23:24:10.001, w3wp.exe (pid 4242) closes its connection to smps1.shared.lab:44443 (port 50136).",
		"Step 6: at 23:25:00.000, the 5 connections of w3wp.exe (pid 4242) to smps1.shared.lab:44443 on ports 50137, 50138, 50139, 50140 and 50141 are closed by the server.",
		"Step 7: at 23:25:00.010, w3wp.exe (pid 4242) fails to connect to smps1.shared.lab:44443 2 times: connection refused.",
	)
}

// TestNarrateApache: every httpd child bootstraps and opens its own HCO
// connections, to both servers the HCO lists; one LLAWP does the same.
func TestNarrateApache(t *testing.T) {
	l := tracetest.NewLab()
	hco := func(proc string, pid, port int) ([]*tracetest.Conn, []*tracetest.Conn) {
		c := l.Connect(proc, pid, port, "smps2.shared.lab", trace.PhaseBootstrap)
		l.Do(c, "GetHostConfig hco.apache", "SUCCESS (HCO hco.apache, 2 servers)")
		l.Reset(c)
		a := l.HCOConns(proc, pid, "smps1.shared.lab", true, port+1, port+2)
		b := l.HCOConns(proc, pid, "smps2.shared.lab", false, port+3, port+4)
		return a, b
	}
	lla, _ := hco("LLAWP", 3000, 40000)
	tracetest.SetPhase(trace.PhaseManagement, lla...)
	var kids [][]*tracetest.Conn
	for i, pid := range []int{3101, 3102} {
		a, _ := hco("httpd", pid, 41000+100*i)
		tracetest.SetPhase(trace.PhaseRequests, a...)
		kids = append(kids, a)
	}
	// The third child is killed while fetching its ACO.
	c := l.Connect("httpd", 3103, 41200, "smps2.shared.lab", trace.PhaseBootstrap)
	l.Do(c, "GetHostConfig hco.apache", "SUCCESS (HCO hco.apache, 2 servers)")
	l.Reset(c)
	c = l.Connect("httpd", 3103, 41201, "smps1.shared.lab", trace.PhaseHCO)
	l.Send(c, "GetAgentConfig aco.wa1")

	l.Do(lla[0], "DoManagement GET_AGENT_COMMANDS", "SUCCESS (0 commands)")
	for _, k := range kids {
		l.Do(k[1], "IsProtected GET /", "NO")
	}
	l.Do(kids[0][0], "IsProtected GET /protected/", "YES")
	l.Do(kids[0][0], "Authorize GET /protected/", "YES")
	l.Wait(30 * time.Second)
	l.Do(lla[0], "DoManagement GET_AGENT_COMMANDS", "SUCCESS (1 commands)")

	narrCheck(t, l.Events,
		"Step 1: LLAWP (pid 3000) connects to smps2.shared.lab:44443 using tcp port 40000, downloads HCO hco.apache and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: LLAWP (pid 3000) connects to smps1.shared.lab:44443 by creating 2 connections, ports 40001 and 40002, and downloads ACO aco.wa1 over the first (port 40001).",
		"Step 3: LLAWP (pid 3000) connects to smps2.shared.lab:44443 by creating 2 connections, ports 40003 and 40004.",
		"Step 4: httpd (pid 3101) connects to smps2.shared.lab:44443 using tcp port 41000, downloads HCO hco.apache and resets the connection.",
		"Step 5: httpd (pid 3101) connects to smps1.shared.lab:44443 by creating 2 connections, ports 41001 and 41002, and downloads ACO aco.wa1 over the first (port 41001).",
		"Step 6: httpd (pid 3101) connects to smps2.shared.lab:44443 by creating 2 connections, ports 41003 and 41004.",
		"Step 7: httpd (pid 3102) connects to smps2.shared.lab:44443 using tcp port 41100, downloads HCO hco.apache and resets the connection.",
		"Step 8: httpd (pid 3102) connects to smps1.shared.lab:44443 by creating 2 connections, ports 41101 and 41102, and downloads ACO aco.wa1 over the first (port 41101).",
		"Step 9: httpd (pid 3102) connects to smps2.shared.lab:44443 by creating 2 connections, ports 41103 and 41104.",
		"Step 10: httpd (pid 3103) connects to smps2.shared.lab:44443 using tcp port 41200, downloads HCO hco.apache and resets the connection.",
		"Step 11: httpd (pid 3103) connects to smps1.shared.lab:44443 using tcp port 41201 and asks for ACO aco.wa1 with no response recorded.",
		"Step 12: LLAWP sends DoManagement to smps1.shared.lab:44443 every 30.0 s (2 polls) over port 40001.",
		"Step 13: httpd (pid 3101) sends 2 IsProtected and 1 Authorize requests to smps1.shared.lab:44443 over ports 41001 and 41002.",
		"Step 14: httpd (pid 3102) sends 1 IsProtected request to smps1.shared.lab:44443 over port 41102.",
	)
}

func TestNarrateNoAgent(t *testing.T) {
	l := tracetest.NewLab()
	l.Host = "wa2.shared.lab" // another web server: not the one asked about
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	l.Host = "wa1.shared.lab"
	var serverOnly []trace.Event
	for _, e := range l.Events {
		if e.Proc == "smps" {
			serverOnly = append(serverOnly, e)
		}
	}
	for name, evs := range map[string][]trace.Event{"empty": nil, "other host": l.Events, "servers only": serverOnly} {
		if steps := Narrate(evs, "wa1.shared.lab", tracetest.Servers); len(steps) != 0 {
			t.Errorf("%s: %s", name, narrText(t, steps))
		}
	}
	var b bytes.Buffer
	if err := Write(&b, nil); err != nil || b.Len() != 0 {
		t.Errorf("no steps written as %q, %v", b.String(), err)
	}
	// A web server talking to some other server is not told either.
	if steps := Narrate(tracetest.IIS(), "wa1.shared.lab", []string{"smps9.shared.lab"}); len(steps) != 0 {
		t.Errorf("unlisted server: %s", narrText(t, steps))
	}
}

func TestNarrateRegistrationFailure(t *testing.T) {
	l := tracetest.NewLab()
	l.Fail("smreghost", 99, "smps2.shared.lab", trace.PhaseAdmin, "connect: connection refused")
	c := l.Connect("smreghost", 99, 50001, "smps2.shared.lab", trace.PhaseAdmin)
	l.Do(c, "RegisterHost trust_wa1", "FAILURE - trusted host trust_wa1 exists")
	l.Close(c)
	narrCheck(t, l.Events,
		"Step 1: smreghost (pid 99) tries smps2.shared.lab:44443 first: connection refused; then connects to smps2.shared.lab:44443 using tcp port 50001, asks to register trusted host trust_wa1 but gets FAILURE (trusted host trust_wa1 exists) and closes the connection.",
	)
}

// TestNarrateOddities covers what the lab rarely does: the ACO over another
// socket than the first, a failed SetAgentInfo, HCO sockets that end in the
// HCO phase, requests only over new sockets, a socket opened and never used,
// and two kinds of management call.
func TestNarrateOddities(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("w3wp.exe", 1, 50100, "smps2.shared.lab")
	cs := l.HCOConns("w3wp.exe", 1, "smps1.shared.lab", false, 50101, 50102)
	l.Do(cs[1], "GetAgentConfig aco.wa1", "SUCCESS (ACO aco.wa1)")
	l.Do(cs[1], "SetAgentInfo wa1", "FAILURE - unknown agent")
	l.Fail("w3wp.exe", 1, "smps1.shared.lab", trace.PhaseHCO, "connect: connection refused")
	l.Close(cs[0])
	l.Peer(cs[1], trace.OpReset)
	l.Fail("w3wp.exe", 1, "smps2.shared.lab", trace.PhaseHCO, "connect: connection refused")
	c := l.Connect("w3wp.exe", 1, 50200, "smps2.shared.lab", trace.PhaseRequests)
	l.Do(c, "IsProtected GET /", "YES")
	l.Open("w3wp.exe", 1, 50201, "smps1.shared.lab", trace.PhaseRequests)
	m := l.Connect("LLAWP.exe", 2, 50300, "smps1.shared.lab", trace.PhaseManagement)
	for i := 0; i < 3; i++ {
		l.Do(m, "DoManagement GET_AGENT_COMMANDS", "SUCCESS (0 commands)")
		l.Wait(2 * time.Second)
	}
	l.Do(m, "Logout", "SUCCESS")
	narrCheck(t, l.Events,
		"Step 1: w3wp.exe (pid 1) connects to smps2.shared.lab:44443 using tcp port 50100, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: w3wp.exe (pid 1) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50101 and 50102, downloads ACO aco.wa1 over port 50102, sends SetAgentInfo wa1 but gets FAILURE (unknown agent), fails to connect once more: connection refused, closes port 50101 and the server resets port 50102.",
		"Step 3: w3wp.exe (pid 1) tries smps2.shared.lab:44443: connection refused.",
		"Step 4: w3wp.exe sends 1 IsProtected request to smps2.shared.lab:44443; it opened 1 socket (port 50200).",
		"Step 5: w3wp.exe opened 1 more socket (port 50201) to smps1.shared.lab:44443.",
		"Step 6: LLAWP.exe sends DoManagement every 2.0 s (3 polls) and Logout once to smps1.shared.lab:44443; it opened 1 socket (port 50300).",
	)
}

type narrErrWriter struct{}

func (narrErrWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

func TestWriteNarrativeError(t *testing.T) {
	if err := Write(narrErrWriter{}, Narrate(tracetest.IIS(), "wa1.shared.lab", tracetest.Servers)); err == nil {
		t.Error("write error not reported")
	}
}

// narrDecode turns fuzz bytes into events directly, 6 bytes each, so that
// the fuzzer explores odd sequences (a response before its request, an end
// twice, time going backwards) rather than JSON syntax.
func narrDecode(data []byte) []trace.Event {
	procs := []string{"w3wp.exe", "LLAWP.exe", "httpd", "httpd", "smreghost", ""}
	ops := []string{trace.OpConnect, trace.OpAccept, trace.OpSend, trace.OpReceive, trace.OpDisconnect, trace.OpReset, trace.OpHandshake, trace.OpRequest, trace.OpResponse, trace.OpServerState, "Bogus"}
	phases := []string{trace.PhaseBootstrap, trace.PhaseHCO, trace.PhaseRequests, trace.PhaseManagement, trace.PhaseAdmin, ""}
	// What an event says besides its op (which the fuzzer picks apart):
	// its note and fields, as producers record them, and odd ones.
	says := []trace.Event{{}, tracetest.Failed("connect: connection refused"), tracetest.Request("GetHostConfig hco.smps1"),
		tracetest.Response("GetHostConfig hco.smps1", "SUCCESS (HCO hco.smps1, 1 servers)"), tracetest.Request("GetAgentConfig aco.wa1"),
		tracetest.Response("GetAgentConfig aco.wa1", "FAILURE - x"), tracetest.Request("SetAgentInfo wa1"), tracetest.Request("IsProtected GET /"),
		tracetest.Response("IsProtected GET /", "YES"), tracetest.Request("DoManagement GET_AGENT_COMMANDS"), tracetest.Request("RegisterHost trust_wa1"),
		tracetest.Response("RegisterHost trust_wa1", "SUCCESS"), tracetest.Refused(3154, "no"), tracetest.PeerClose(trace.OpDisconnect), tracetest.PeerClose(trace.OpReset),
		{Note: " "}, {Note: ":"}, tracetest.Failed(""), tracetest.Request(""), tracetest.Response("", ""),
		tracetest.State("smps1.shared.lab:44443", trace.StateActive, trace.StateFailed, "x", ""), tracetest.State("smps1.shared.lab:44443", "", trace.StateDisabled, "", "x"),
		{Op: trace.OpServerState, State: &trace.ServerState{}}}
	hosts := []string{"wa1.shared.lab", "smps1.shared.lab", "smps2.shared.lab", "", "WA1.shared.lab"}
	t := tracetest.Start
	var evs []trace.Event
	for len(data) >= 6 {
		b := data[:6]
		data = data[6:]
		t = t.Add(time.Duration(int8(b[0])) * 100 * time.Millisecond)
		pid := int(b[1] % 4)
		ev := says[int(b[3])%len(says)]
		ev.T, ev.Proc, ev.PID, ev.Op = t, procs[int(b[1]/4)%len(procs)], pid, ops[int(b[2])%len(ops)]
		ev.Phase, ev.LocalHost, ev.RemoteHost = phases[int(b[2]/16)%len(phases)], hosts[int(b[4]%8)%len(hosts)], hosts[int(b[4]/8)%len(hosts)]
		if b[5]%8 != 0 {
			ev.Conn = fmt.Sprintf("%d-%d", pid, b[5]%8)
			ev.Local = fmt.Sprintf("127.0.0.11:%d", 50000+int(b[5]%8))
		}
		if b[5]&0x80 != 0 {
			ev.Local = "" // a port the trace does not know
		}
		ev.Remote = "127.0.0.21:44443"
		evs = append(evs, ev)
	}
	return evs
}

func FuzzNarrate(f *testing.F) {
	// Seeds stay small (a few KB): the fuzzer minimises every new input,
	// and on a whole lab's trace that takes it minutes per input.
	l := tracetest.NewLab()
	l.Fail("w3wp.exe", 4242, "smps3.shared.lab", trace.PhaseBootstrap, "connect: connection refused")
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	pool := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	tracetest.SetPhase(trace.PhaseRequests, pool...)
	l.Send(pool[0], "IsProtected GET /")
	l.Send(pool[1], "IsProtected GET /")
	l.Open("w3wp.exe", 4242, 50137, "smps1.shared.lab", trace.PhaseRequests)
	l.Reset(pool[0])
	var agent []trace.Event
	for _, e := range l.Events {
		if e.Proc != "smps" {
			agent = append(agent, e)
		}
	}
	var b bytes.Buffer
	if err := trace.WriteEvents(&b, agent); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte(`{"t":"2017-04-18T23:23:35Z","proc":"w3wp.exe","pid":1,"op":"TCP Reset","conn":"1-1","local_host":"wa1.shared.lab","remote_host":"smps1.shared.lab"}` + "\n"))
	f.Add([]byte{0, 1, 7, 2, 8, 1, 0, 1, 8, 3, 8, 1, 200, 1, 4, 0, 8, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, _ := trace.ReadEvents("fuzz", bytes.NewReader(data))
		evs = append(evs, narrDecode(data)...)
		for _, q := range []struct {
			host    string
			servers []string
		}{
			{"wa1.shared.lab", tracetest.Servers},
			{"", nil},
		} {
			steps := Narrate(evs, q.host, q.servers)
			again := Narrate(evs, q.host, q.servers)
			if !reflect.DeepEqual(steps, again) {
				t.Fatalf("not deterministic:\n%v\n%v", steps, again)
			}
			for i, s := range steps {
				if s.N != i+1 || s.Text == "" || strings.Contains(s.Text, "\n") {
					t.Fatalf("bad step %d: %+v", i+1, s)
				}
			}
			if err := Write(io.Discard, steps); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// An HCO socket that never carries a request keeps the phase it was opened
// in, and closes only when its process stops: that close is the end of the
// run, not part of the start-up step.
func TestNarrateUnusedHCOSocketClosesAtEnd(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	w := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	tracetest.SetPhase(trace.PhaseRequests, w[0])
	l.Do(w[0], "IsProtected GET /", "NO")
	l.Wait(5 * time.Second)
	l.Close(w[1])
	narrCheck(t, l.Events,
		"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: w3wp.exe (pid 4242) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50135 and 50136, and downloads ACO aco.wa1 over the first (port 50135).",
		"Step 3: w3wp.exe sends 1 IsProtected request to smps1.shared.lab:44443 over port 50135.",
		"Step 4: at "+l.Events[len(l.Events)-1].T.Local().Format("15:04:05.000")+", w3wp.exe (pid 4242) closes its connection to smps1.shared.lab:44443 (port 50136).",
	)
}

// An Apache child that served no request still closes its HCO sockets only
// when it stops: that is the end of the run, not part of its start-up.
func TestNarrateIdleChildClosesAtEnd(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("httpd", 3101, 50134, "smps2.shared.lab")
	w := l.HCOConns("httpd", 3101, "smps1.shared.lab", true, 50135, 50136)
	l.Wait(5 * time.Second)
	l.Close(w[0])
	l.Close(w[1])
	narrCheck(t, l.Events,
		"Step 1: httpd (pid 3101) connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: httpd (pid 3101) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50135 and 50136, and downloads ACO aco.wa1 over the first (port 50135).",
		"Step 3: at "+l.Events[len(l.Events)-2].T.Local().Format("15:04:05.000")+", httpd (pid 3101) closes its 2 connections to smps1.shared.lab:44443 (ports 50135 and 50136).",
	)
}

// TestNarrateStepsInTimeOrder: a worker that serves before its LLAWP has
// done its round (what the lab did before workers waited for their LLAWP)
// has its requests told before the LLAWP's bootstrap: steps are numbered by
// when they began, not by the kind of step.
func TestNarrateStepsInTimeOrder(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	w := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	tracetest.SetPhase(trace.PhaseRequests, w...)
	l.Do(w[0], "IsProtected GET /", "NO")
	l.Bootstrap("LLAWP.exe", 4250, 50137, "smps2.shared.lab")
	ll := l.HCOConns("LLAWP.exe", 4250, "smps1.shared.lab", true, 50138, 50139)
	l.Do(w[0], "IsProtected GET /", "NO")
	tracetest.SetPhase(trace.PhaseManagement, ll...)
	l.Do(ll[0], "DoManagement GET_AGENT_COMMANDS", "SUCCESS (0 commands)")
	narrCheck(t, l.Events,
		"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: w3wp.exe (pid 4242) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50135 and 50136, and downloads ACO aco.wa1 over the first (port 50135).",
		"Step 3: w3wp.exe sends 2 IsProtected requests to smps1.shared.lab:44443 over port 50135.",
		"Step 4: LLAWP.exe (pid 4250) connects to smps2.shared.lab:44443 using tcp port 50137, downloads HCO hco.smps1 and resets the connection.",
		"Step 5: LLAWP.exe (pid 4250) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50138 and 50139, and downloads ACO aco.wa1 over the first (port 50138).",
		"Step 6: LLAWP.exe sends DoManagement to smps1.shared.lab:44443 once over port 50138.",
	)
}

// TestNarratePoolSteps: the pool's growth as the trace records it
// (PoolStep): each step told on its own, with its time and the sockets it
// takes the pool from and to, although the steps overlap in time; the last
// step smaller, up to MaxSocketsPerPort; a step whose connect failed.
func TestNarratePoolSteps(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	pool := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	tracetest.SetPhase(trace.PhaseRequests, pool...)
	const isp = "IsProtected GET /protected/"
	l.Send(pool[0], isp)
	l.Send(pool[1], isp)
	st := func(n, from, to int) trace.PoolStep {
		return trace.PoolStep{N: n, From: from, To: to, NewSocketStep: 2, MaxSocketsPerPort: 7}
	}
	// Two steps taken together: their sockets connect in between each other.
	a := l.Grow("w3wp.exe", 4242, 50137, "smps1.shared.lab", st(1, 2, 4))
	b := l.Grow("w3wp.exe", 4242, 50139, "smps1.shared.lab", st(2, 4, 6))
	c := l.Grow("w3wp.exe", 4242, 50138, "smps1.shared.lab", st(1, 2, 4))
	d := l.Grow("w3wp.exe", 4242, 50140, "smps1.shared.lab", st(2, 4, 6))
	for _, k := range []*tracetest.Conn{a, b, c, d} {
		l.Send(k, isp)
	}
	l.Wait(time.Second)
	e := l.Grow("w3wp.exe", 4242, 50141, "smps1.shared.lab", st(3, 6, 7))
	l.Do(e, isp, "YES")
	l.Wait(time.Second)
	l.Step = &trace.PoolStep{N: 4, From: 5, To: 7, NewSocketStep: 2, MaxSocketsPerPort: 7}
	l.Fail("w3wp.exe", 4242, "smps1.shared.lab", trace.PhaseRequests, "connect: connection refused")
	for _, k := range append(pool, a, b, c, d) {
		l.Answer(k, isp, "YES")
	}
	narrCheck(t, l.Events,
		"Step 1: w3wp.exe (pid 4242) connects to smps2.shared.lab:44443 using tcp port 50134, downloads HCO hco.smps1 and resets the connection (Process Monitor has no operation for a reset, so it shows a TCP Disconnect).",
		"Step 2: w3wp.exe (pid 4242) connects to smps1.shared.lab:44443 by creating 2 connections, ports 50135 and 50136, and downloads ACO aco.wa1 over the first (port 50135).",
		"Step 3: w3wp.exe sends 7 IsProtected requests to smps1.shared.lab:44443 over ports 50135 and 50136; its pool grows in 4 steps, each told at its time.",
		"Step 4: at 23:23:35.034, w3wp.exe's pool to smps1.shared.lab:44443 grows from 2 to 4 sockets by NewSocketStep (2) when both were busy: ports 50137 and 50138.",
		"Step 5: at 23:23:35.041, w3wp.exe's pool to smps1.shared.lab:44443 grows from 4 to 6 sockets by NewSocketStep (2): ports 50139 and 50140.",
		"Step 6: at 23:23:36.070, w3wp.exe's pool to smps1.shared.lab:44443 grows from 6 to 7 sockets to MaxSocketsPerPort (7) when all 6 were busy: port 50141.",
		"Step 7: at 23:23:37.081, w3wp.exe's pool to smps1.shared.lab:44443 grows from 5 to 7 sockets by NewSocketStep (2), but 1 connect fails (connection refused).",
	)
}

// TestNarrateUseCase: the ACO the agent received tells which of the seed's
// use cases the page loads show.
func TestNarrateUseCase(t *testing.T) {
	tests := []struct {
		name  string
		cache trace.AgentCache
		loads int // IsProtected sent
		want  string
	}{
		{"cache off", trace.AgentCache{ACO: "aco.wa1"}, 11,
			"Step 3: w3wp.exe sends 11 IsProtected requests to smps1.shared.lab:44443 over port 50135. " +
				"Use case (b): the agent cache is off (ACO aco.wa1: MaxResourceCacheSize 0), so every page load asks the Policy Server IsProtected: 11 IsProtected."},
		{"cache on", trace.AgentCache{ACO: "aco.wa1", Resources: 700, Sessions: 700}, 2,
			"Step 3: w3wp.exe sends 2 IsProtected requests to smps1.shared.lab:44443 over port 50135. " +
				"Use case (a): the agent cache is on (ACO aco.wa1: MaxResourceCacheSize 700), so only the first load of a resource asks the Policy Server IsProtected, later loads are answered from the cache: 2 IsProtected in all."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tracetest.NewLab()
			l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
			w := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
			for i := range l.Events {
				if e := &l.Events[i]; e.Role == "hla" && e.Op == trace.OpResponse && e.Request == trace.ReqGetAgentConfig {
					e.AgentCache = &tt.cache
				}
			}
			tracetest.SetPhase(trace.PhaseRequests, w...)
			for range tt.loads {
				l.Do(w[0], "IsProtected GET /", "NO")
			}
			steps := Narrate(l.Events, "wa1.shared.lab", tracetest.Servers)
			if got := narrText(t, steps); !strings.Contains(got, tt.want+"\n") {
				t.Errorf("narrative:\n%s\nwant the line:\n%s", got, tt.want)
			}
		})
	}
}

// TestNarratePoolStepsInTheOrderTaken: steps taken a few microseconds
// apart connect in any order; each is told at the time the pool took it,
// in the order it took them.
func TestNarratePoolStepsInTheOrderTaken(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	pool := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	tracetest.SetPhase(trace.PhaseRequests, pool...)
	const isp = "IsProtected GET /protected/"
	l.Send(pool[0], isp)
	l.Send(pool[1], isp)
	taken := l.T.Add(time.Microsecond)
	st := func(n, from int) trace.PoolStep {
		return trace.PoolStep{N: n, At: taken.Add(time.Duration(n) * time.Microsecond), From: from, To: from + 2, NewSocketStep: 2, MaxSocketsPerPort: 20}
	}
	// The second step's sockets connect first.
	l.Grow("w3wp.exe", 4242, 50139, "smps1.shared.lab", st(2, 4))
	l.Grow("w3wp.exe", 4242, 50140, "smps1.shared.lab", st(2, 4))
	l.Grow("w3wp.exe", 4242, 50137, "smps1.shared.lab", st(1, 2))
	l.Grow("w3wp.exe", 4242, 50138, "smps1.shared.lab", st(1, 2))
	steps := Narrate(l.Events, "wa1.shared.lab", tracetest.Servers)
	got := narrText(t, steps)
	for _, want := range []string{
		"Step 4: at 23:23:35.033, w3wp.exe's pool to smps1.shared.lab:44443 grows from 2 to 4 sockets by NewSocketStep (2) when both were busy: ports 50137 and 50138.\n",
		"Step 5: at 23:23:35.033, w3wp.exe's pool to smps1.shared.lab:44443 grows from 4 to 6 sockets by NewSocketStep (2) when both open sockets were busy and 2 more were still connecting: ports 50139 and 50140.\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("narrative:\n%s\nwant the line:\n%s", got, want)
		}
	}
	if len(steps) > 4 && (!steps[3].First.Equal(taken.Add(time.Microsecond)) || !steps[4].First.Equal(taken.Add(2*time.Microsecond))) {
		t.Errorf("the steps begin at %v and %v, want when the pool took them", steps[3].First, steps[4].First)
	}
}

// TestNarrateWorkerDeath: a worker that died is told at its time, with
// what its supervisor did, among the steps; the new worker's start-up
// follows as its own steps. A process that was stopped is no step.
func TestNarrateWorkerDeath(t *testing.T) {
	l := tracetest.NewLab()
	l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
	l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
	exit := func(pid int, death bool) {
		l.Events = append(l.Events, trace.Event{T: l.Tick(), Proc: "w3wp.exe", PID: pid, Role: "hla", Op: trace.OpProcessExit,
			Process: &trace.Process{Name: "w3wp.exe", PID: pid, Exit: &trace.Exit{Code: -1, Signal: "SIGKILL", Death: death,
				Action: "svchost.exe (pid 4200) starts a new w3wp.exe in 100ms, which bootstraps again"}}})
	}
	exit(4242, true)
	l.Bootstrap("w3wp.exe", 4300, 50140, "smps2.shared.lab")
	exit(4300, false)
	steps := Narrate(l.Events, "wa1.shared.lab", []string{"smps1.shared.lab", "smps2.shared.lab"})
	var texts []string
	for _, s := range steps {
		texts = append(texts, s.Text)
	}
	if len(steps) != 4 {
		t.Fatalf("%d steps, want bootstrap, HCO, the death, the new bootstrap:\n%s", len(steps), strings.Join(texts, "\n"))
	}
	want := "w3wp.exe (pid 4242) was killed by signal 9 (SIGKILL): svchost.exe (pid 4200) starts a new w3wp.exe in 100ms, which bootstraps again."
	if !strings.HasSuffix(steps[2].Text, want) || !strings.HasPrefix(steps[2].Text, "at ") {
		t.Errorf("step 3: %q, want it to end %q", steps[2].Text, want)
	}
	if !strings.HasPrefix(steps[3].Text, "w3wp.exe (pid 4300) connects to smps2.shared.lab:44443") {
		t.Errorf("step 4: %q, want the new worker's bootstrap", steps[3].Text)
	}
}
