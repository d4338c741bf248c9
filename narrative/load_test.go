package narrative

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
	"github.com/agentlab/agentlab/trace/tracetest"
)

const (
	loadServer = "smps1.shared.lab"
	loadLimit  = "Connection request rejected. Connection limit of 2 exceeded."
)

// loadServerEvent is an event of smps1 (pid 9049) with one of wa1's
// connections, as a Policy Server under load records it.
func loadServerEvent(l *tracetest.Lab, op, conn, remote string, e trace.Event) {
	e.T, e.Proc, e.PID, e.Role, e.Op, e.Conn = l.Tick(), "smps", 9049, "policyserver", op, conn
	e.Local, e.Remote, e.LocalHost, e.RemoteHost, e.Phase = tracetest.IPs[loadServer]+":44443", remote, loadServer, "wa1.shared.lab", trace.PhaseRequests
	l.Events = append(l.Events, e)
}

func queued(depth, busy int) *trace.QueueState {
	return &trace.QueueState{Depth: depth, Bound: 64, Busy: busy, Threads: 2}
}

// loadTrace is the build-up, hand-made: smps1's two workers wait on a slow
// directory and its queue grows for 3 s; w3wp.exe gives up on its
// IsProtected after RequestTimeout and sends it again on a new connection,
// which times out too; the connections climb to the limit (2) and smps1
// refuses LLAWP.exe's; the queue drains.
func loadTrace() []trace.Event {
	l := tracetest.NewLab()
	l.Jump("12:00:00")
	c1 := l.Connect("w3wp.exe", 10, 5001, loadServer, trace.PhaseRequests)
	l.Send(c1, "IsProtected GET /protected/")
	for i := 1; i <= 6; i++ {
		loadServerEvent(l, trace.OpRequest, fmt.Sprintf("s-q%d", i), "127.0.0.11:4000", trace.Event{Request: trace.ReqIsProtected, Queue: queued(i, 2)})
		l.Wait(500 * time.Millisecond)
	}
	// 12:00:03: RequestTimeout (2 s) is up.
	l.Record(c1, trace.Event{Op: trace.OpDisconnect, Timeout: &trace.RequestTimeout{After: 2 * time.Second, Request: trace.ReqIsProtected}}, 0)
	c2 := l.Connect("w3wp.exe", 10, 5002, loadServer, trace.PhaseRequests)
	l.Record(c2, trace.Event{Op: trace.OpRequest, Request: trace.ReqIsProtected, Subject: "GET /protected/", Note: "IsProtected GET /protected/", Resend: 1}, 40)
	l.Wait(200 * time.Millisecond)
	c3 := l.Open("LLAWP.exe", 11, 5003, loadServer, trace.PhaseRequests)
	loadServerEvent(l, trace.OpAccept, "s-11-1", tracetest.IPs["wa1.shared.lab"]+":5003", trace.Event{Limit: &trace.ConnLimit{Max: 2, Message: loadLimit}})
	loadServerEvent(l, trace.OpDisconnect, "s-11-1", tracetest.IPs["wa1.shared.lab"]+":5003", trace.Event{Limit: &trace.ConnLimit{Max: 2, Message: loadLimit}})
	l.Peer(c3, trace.OpDisconnect)
	l.Wait(1800 * time.Millisecond)
	// 12:00:05: the resend times out too, and nothing sends it again.
	l.Record(c2, trace.Event{Op: trace.OpDisconnect, Timeout: &trace.RequestTimeout{After: 2 * time.Second, Request: trace.ReqIsProtected}}, 0)
	loadServerEvent(l, trace.OpResponse, "s-q6", "127.0.0.11:4000", trace.Event{Request: trace.ReqIsProtected, Result: "YES",
		Queue: &trace.QueueState{Depth: 0, Bound: 64, Busy: 1, Threads: 2, Waited: 2300 * time.Millisecond, Directory: 800 * time.Millisecond}})
	return l.Events
}

// TestNarrateLoad: the build-up is told in time order, from the load
// fields only: the queue, the connections climbing, the timeouts and the
// resend, the refusal in the vendor's words, the failed page loads.
func TestNarrateLoad(t *testing.T) {
	narrCheck(t, loadTrace(),
		"Step 1: w3wp.exe sends 2 IsProtected requests to smps1.shared.lab:44443; 2 got no recorded response; it opened 1 socket (port 5001) and 1 more (port 5002).",
		"Step 2: at 12:00:00.009, smps1.shared.lab's worker threads are all busy (2 of 2) and its request queue grows: depth 2, 4, 6, 6, 6, 6 second by second (peak 6 of its bound 64 at 12:00:02.514); requests wait up to 2.3s in the queue, and the user directory holds a worker 800ms per request (median); the queue is empty again at 12:00:05.029.",
		"Step 3: at 12:00:00.009, the connections open to smps1.shared.lab climb: 1, 1, 1, 2 second by second, to a peak of 2 at 12:00:03.016.",
		"Step 4: at 12:00:03.015, w3wp.exe (pid 10) closes its connection to smps1.shared.lab:44443 (port 5001), with IsProtected GET /protected/ unanswered.",
		"Step 5: from 12:00:03.015 to 12:00:05.028, w3wp.exe gives up on 2 IsProtected requests after RequestTimeout (2s) and closes their sockets; it sends 1 request again on another connection (port 5002).",
		"Step 6: LLAWP.exe opened 1 socket (port 5003) to smps1.shared.lab:44443.",
		`Step 7: at 12:00:03.225, smps1.shared.lab refuses LLAWP.exe's connection: Connection limit of 2 exceeded. Its log says "Connection request rejected. Connection limit of 2 exceeded." for each.`,
		"Step 8: at 12:00:03.227, the connection of LLAWP.exe (pid 11) to smps1.shared.lab:44443 on port 5003 is closed by the server.",
		"Step 9: from 12:00:03.227 to 12:00:05.028, 1 IsProtected request gets no answer on any connection, and smps1.shared.lab closes 1 agent connection before it carries a request: the page loads that waited on them fail.",
		"Step 10: at 12:00:05.028, w3wp.exe (pid 10) closes its connection to smps1.shared.lab:44443 (port 5002), with IsProtected GET /protected/ unanswered.",
	)
}

// TestNarrateLoadFieldsOnly: the same trace without its load fields has
// none of the load steps (a run recorded before them reads as it did),
// and each field brings its own step.
func TestNarrateLoadFieldsOnly(t *testing.T) {
	strip := func(keep string) []trace.Event {
		evs := loadTrace()
		for i := range evs {
			e := &evs[i]
			if keep != "limit" {
				e.Limit = nil
			}
			if keep != "queue" {
				e.Queue = nil
			}
			if keep != "timeout" {
				e.Timeout = nil
				e.Resend = 0
			}
		}
		return evs
	}
	cases := []struct {
		keep string
		want []string
		not  []string
	}{
		{"", nil, []string{"refuses", "request queue", "gives up", "climb", "page loads"}},
		// Nothing climbs after the refusal: the connections are told from the story's start.
		{"limit", []string{"refuses LLAWP.exe's connection: Connection limit of 2 exceeded"}, []string{"request queue", "gives up", "climb"}},
		{"queue", []string{"its request queue grows"}, []string{"refuses", "gives up"}},
		{"timeout", []string{"gives up on 2 IsProtected requests", "1 IsProtected request gets no answer"}, []string{"refuses", "request queue", "climb"}},
	}
	for _, c := range cases {
		t.Run("keep "+c.keep, func(t *testing.T) {
			text := narrText(t, Narrate(strip(c.keep), "wa1.shared.lab", tracetest.Servers))
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("no %q in\n%s", w, text)
				}
			}
			for _, w := range c.not {
				if strings.Contains(text, w) {
					t.Errorf("%q in\n%s", w, text)
				}
			}
		})
	}
}

// TestNarrateLoadRefusals: many refusals are one step per LoadWindow,
// each naming whom the server refused (httpd children by pid).
func TestNarrateLoadRefusals(t *testing.T) {
	l := tracetest.NewLab()
	l.Jump("12:00:00")
	for i := range 8 {
		pid := 20 + i%2
		c := l.Open("httpd", pid, 6000+i, loadServer, trace.PhaseRequests)
		lim := &trace.ConnLimit{Max: 256, Message: "Connection request rejected. Connection limit of 256 exceeded."}
		// smps records the refusal on its accept; tracetest's mirror of
		// the connect has no Limit and is the same connection.
		loadServerEvent(l, trace.OpAccept, fmt.Sprintf("s-%d-%d", pid, i/2+1), tracetest.IPs["wa1.shared.lab"]+fmt.Sprintf(":%d", 6000+i), trace.Event{Limit: lim})
		l.Peer(c, trace.OpReset)
		l.Wait(time.Second)
	}
	var got []string
	for _, s := range Narrate(l.Events, "wa1.shared.lab", tracetest.Servers) {
		if strings.Contains(s.Text, "refuses") {
			got = append(got, s.Text)
		}
	}
	want := []string{
		`at 12:00:00.001, smps1.shared.lab refuses httpd (pid 20)'s connection: Connection limit of 256 exceeded; then 4 more until 12:00:04.013 (httpd (pid 20) 2, httpd (pid 21) 2). Its log says "Connection request rejected. Connection limit of 256 exceeded." for each.`,
		`at 12:00:05.016, smps1.shared.lab refuses httpd (pid 21)'s connection: Connection limit of 256 exceeded; then 2 more until 12:00:07.022 (httpd (pid 20) 1, httpd (pid 21) 1). Its log says "Connection request rejected. Connection limit of 256 exceeded." for each.`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("refusals:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestNarrateLoadTimeouts: timeouts and resends of several agent
// processes are one step per LoadWindow, with each process's share.
func TestNarrateLoadTimeouts(t *testing.T) {
	l := tracetest.NewLab()
	l.Jump("12:00:00")
	port := 7000
	for i := range 3 {
		pid := 30 + i%2
		c := l.Connect("httpd", pid, port, loadServer, trace.PhaseRequests)
		port++
		l.Send(c, "Authorize GET /protected/")
		l.Wait(3 * time.Second)
		l.Record(c, trace.Event{Op: trace.OpDisconnect, Timeout: &trace.RequestTimeout{After: 2 * time.Second, Request: trace.ReqAuthorize}}, 0)
		r := l.Connect("httpd", pid, port, loadServer, trace.PhaseRequests)
		port++
		l.Record(r, trace.Event{Op: trace.OpRequest, Request: trace.ReqAuthorize, Subject: "GET /protected/", Note: "Authorize GET /protected/", Resend: 1}, 40)
		l.Answer(r, "Authorize GET /protected/", "YES")
	}
	var got []string
	for _, s := range Narrate(l.Events, "wa1.shared.lab", tracetest.Servers) {
		if strings.Contains(s.Text, "RequestTimeout") || strings.Contains(s.Text, "no answer") {
			got = append(got, s.Text)
		}
	}
	want := []string{
		"from 12:00:03.009 to 12:00:06.037, the agents give up on 2 Authorize requests after RequestTimeout (2s) and close their sockets (httpd (pid 30) 1, httpd (pid 31) 1); they send 2 requests again on 2 other connections (httpd (pid 30) 1, httpd (pid 31) 1).",
		"at 12:00:09.049, httpd (pid 30) gives up on 1 Authorize request after RequestTimeout (2s) and closes its socket; it sends 1 request again on another connection (port 7005).",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
