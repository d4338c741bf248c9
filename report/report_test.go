package report

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/narrative"
	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/trace"
	"github.com/agentlab/agentlab/trace/tracetest"
)

// arrowRE reads one drawn arrow of report.html: its phase, kind and, for a
// "… and K more" row, the requests and responses it stands for.
var arrowRE = regexp.MustCompile(`<g class="arrow [^"]*" data-phase="([^"]*)" data-kind="([^"]*)"[^>]*?(?: data-requests="(\d+)" data-responses="(\d+)")?>`)

// drawnCounts counts a page's arrows per phase and kind, a "more" row
// counting as the requests and responses it stands for.
func drawnCounts(page string) (counts map[string]int, arrows int) {
	counts = map[string]int{}
	for _, m := range arrowRE.FindAllStringSubmatch(page, -1) {
		phase, kind := m[1], m[2]
		arrows++
		if kind == KindMore {
			req, _ := strconv.Atoi(m[3])
			resp, _ := strconv.Atoi(m[4])
			counts[phase+"/"+KindRequest] += req
			counts[phase+"/"+KindResponse] += resp
			continue
		}
		counts[phase+"/"+kind]++
	}
	return counts, arrows
}

// eventCounts counts what the diagram must show of evs, straight from the
// events: per phase and kind, the web server host's events with the
// servers, of the first procs processes (0: all).
func eventCounts(evs []trace.Event, host string, servers []string, procs int) map[string]int {
	counts := map[string]int{}
	seen := map[string]bool{}
	for _, e := range evs {
		kind := DiagramKind(e)
		if kind == "" || !narrative.Selected(&e, host, servers) {
			continue
		}
		who := fmt.Sprint(e.Proc, e.PID)
		if !seen[who] {
			if procs > 0 && len(seen) == procs {
				continue
			}
			seen[who] = true
		}
		phase := e.Phase
		if phase == "" {
			phase = "none"
		}
		counts[phase+"/"+kind]++
	}
	return counts
}

func renderReport(t *testing.T, sides ...Side) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, Page{Title: "test", Lines: []string{"a line"}, Sides: sides}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestReportDiagram(t *testing.T) {
	peer := func() []trace.Event {
		l := tracetest.NewLab()
		l.Bootstrap("w3wp.exe", 4242, 50134, "smps2.shared.lab")
		w := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
		tracetest.SetPhase(trace.PhaseRequests, w...)
		l.Do(w[0], "IsProtected GET /", "NO")
		l.Send(w[1], "Authorize GET /protected/")
		l.Peer(w[1], trace.OpReset)
		l.Peer(w[0], trace.OpDisconnect)
		l.Close(w[0])
		return l.Events
	}
	failures := func() []trace.Event {
		l := tracetest.NewLab()
		l.Fail("w3wp.exe", 4242, "smps3.shared.lab", trace.PhaseBootstrap, "connect: connection refused")
		c := l.Open("w3wp.exe", 4242, 50134, "smps2.shared.lab", trace.PhaseBootstrap)
		l.Record(c, tracetest.Handshake(trace.HandshakeClientHello, "ClientHello trusted host trust_wa1"), 70)
		l.Record(c, tracetest.Refused(3153, "Shared secret incorrect"), 40)
		l.Close(c)
		// An event without a phase is drawn as such, not guessed.
		c = l.Connect("w3wp.exe", 4242, 50135, "smps2.shared.lab", "")
		l.Reset(c)
		return l.Events
	}
	storm := func() []trace.Event {
		l := tracetest.NewLab()
		for i := range diagMaxProcs + 4 {
			l.Bootstrap("httpd", 5000+i, 41000+i, "smps2.shared.lab")
		}
		return l.Events
	}
	busy := func() []trace.Event {
		l := tracetest.NewLab()
		w := l.HCOConns("w3wp.exe", 4242, "smps1.shared.lab", true, 50135, 50136)
		tracetest.SetPhase(trace.PhaseRequests, w...)
		for i := range 500 {
			l.Do(w[i%2], "IsProtected GET /protected/", "YES")
			l.Do(w[i%2], "Authorize GET /protected/", "YES")
		}
		l.Send(w[0], "IsProtected GET /")
		return l.Events
	}
	for _, tc := range []struct {
		name   string
		evs    []trace.Event
		procs  int      // lanes the diagram may draw, 0 for all
		lanes  []string // the lanes, left to right
		subs   []string // their second lines, when checked
		more   int      // "… and K more" rows
		notes  []string // what the page must say it left out
		counts map[string]int
	}{
		{name: "seed", evs: tracetest.IIS(), lanes: []string{"w3wp.exe (4242)", "LLAWP.exe (4250)", "smps1.shared.lab", "smps2.shared.lab"},
			more: 2, notes: []string{"first 8 requests of a phase", "on 2 connections"},
			counts: map[string]int{"bootstrap/connect": 2, "hco/connect": 4, "bootstrap/handshake": 6, "hco/handshake": 12,
				"bootstrap/reset": 2, "management/request": 4}},
		{name: "ends by the server", evs: peer(), lanes: []string{"w3wp.exe (4242)", "smps1.shared.lab", "smps2.shared.lab"},
			counts: map[string]int{"requests/reset": 1, "requests/disconnect": 2, "requests/request": 2, "requests/response": 1}},
		{name: "failures", evs: failures(), lanes: []string{"w3wp.exe (4242)", "smps2.shared.lab", "smps3.shared.lab"},
			subs: []string{"2 connections, 1 failed", "port 44443 · 2 connections", "port 44443 · 0 connections, 1 failed"},
			counts: map[string]int{"bootstrap/connect-failed": 1, "bootstrap/connect": 1, "bootstrap/handshake": 2,
				"none/connect": 1, "none/handshake": 3, "none/reset": 1}},
		{name: "recycling storm", evs: storm(), procs: diagMaxProcs,
			notes:  []string{"Only the first 16 processes have a lane", "4 more processes", "httpd (5016)"},
			counts: map[string]int{"bootstrap/connect": diagMaxProcs, "bootstrap/reset": diagMaxProcs}},
		{name: "a thousand requests", evs: busy(), lanes: []string{"w3wp.exe (4242)", "smps1.shared.lab"}, more: 2,
			notes:  []string{"985 more requests, on 2 connections, are summed up in 2 rows"},
			counts: map[string]int{"requests/request": 1001, "requests/response": 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := renderReport(t, Side{Events: tc.evs, Host: "wa1.shared.lab", Servers: tracetest.Servers})
			got, _ := drawnCounts(page)
			want := eventCounts(tc.evs, "wa1.shared.lab", tracetest.Servers, tc.procs)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("arrows per phase/kind:\n got %v\nwant %v (from the events)", got, want)
			}
			// The same counts, stated by hand for the cases a reader checks
			// against the seed: each connect, handshake message and RST.
			for k, n := range tc.counts {
				if got[k] != n {
					t.Errorf("%s: %d arrows, want %d", k, got[k], n)
				}
			}
			if n := strings.Count(page, `data-kind="more"`); n != tc.more {
				t.Errorf("%d “more” rows, want %d", n, tc.more)
			}
			for _, n := range tc.notes {
				if !strings.Contains(html.UnescapeString(page), n) {
					t.Errorf("page does not say %q", n)
				}
			}

			d := layoutDiagram(tc.evs, "wa1.shared.lab", tracetest.Servers, nil)
			var lanes, subs []string
			for _, l := range d.Lanes {
				lanes = append(lanes, l.Label)
				subs = append(subs, l.Sub)
			}
			if tc.lanes != nil && fmt.Sprint(lanes) != fmt.Sprint(tc.lanes) {
				t.Errorf("lanes %q, want %q", lanes, tc.lanes)
			}
			if tc.subs != nil && fmt.Sprint(subs) != fmt.Sprint(tc.subs) {
				t.Errorf("lane counts %q, want %q", subs, tc.subs)
			}
			procX := map[string]int{}
			srvX := map[int]bool{}
			for _, l := range d.Lanes {
				if l.Server {
					srvX[l.X] = true
				} else {
					procX[l.Label] = l.X
				}
			}
			var last int
			for _, r := range d.Rows {
				if r.Y <= last {
					t.Fatalf("row at y=%d after y=%d: time must go down", r.Y, last)
				}
				last = r.Y
				if r.Kind == "gap" || r.Kind == "lanes" {
					continue
				}
				// Every arrow runs between its process's lane and a
				// server's, pointing at the one that acted upon the other.
				p := procX[fmt.Sprintf("%s (%d)", r.Proc, r.PID)]
				back := r.Kind == KindResponse || strings.HasPrefix(r.Label, "ServerHello") ||
					strings.HasPrefix(r.Label, "refused") || strings.Contains(r.Label, "by peer")
				from, to := p, r.To
				if back {
					from, to = r.From, p
				}
				if r.From != from || r.To != to || !srvX[map[bool]int{true: r.From, false: r.To}[back]] {
					t.Errorf("%s %q runs from x=%d to x=%d; process lane at %d, back=%v", r.Kind, r.Label, r.From, r.To, p, back)
				}
			}
			if d.Height != last+diagRowH || d.Width <= d.Lanes[len(d.Lanes)-1].X {
				t.Errorf("diagram %dx%d does not hold its last row (y=%d) and lane", d.Width, d.Height, last)
			}
		})
	}
}

// TestReportDiagramStops: past diagMaxRows the diagram stops and says at
// what time, and how many events it left out.
func TestReportDiagramStops(t *testing.T) {
	l := tracetest.NewLab()
	for i := range diagMaxRows {
		c := l.Open("w3wp.exe", 4242, 30000+i, "smps1.shared.lab", trace.PhaseHCO)
		l.Reset(c)
	}
	d := layoutDiagram(l.Events, "wa1.shared.lab", tracetest.Servers, nil)
	arrows := 0
	for _, r := range d.Rows {
		if r.Kind != "gap" && r.Kind != "lanes" {
			arrows++
		}
	}
	if arrows != diagMaxRows {
		t.Errorf("%d arrows, want the cap %d", arrows, diagMaxRows)
	}
	var agent []trace.Event
	for _, e := range l.Events {
		if e.Proc == "w3wp.exe" {
			agent = append(agent, e)
		}
	}
	stop := agent[diagMaxRows].T.Local().Format(narrative.TimeLayout)
	want := fmt.Sprintf("The diagram stops after %d rows, at %s: %d later events are not drawn.", diagMaxRows, stop, diagMaxRows)
	if len(d.Notes) != 1 || d.Notes[0] != want {
		t.Errorf("notes %q, want %q", d.Notes, want)
	}
}

// TestReportPage checks the page around the diagram: the steps are
// Narrate's, the table's rows WriteTable's, each side has its own anchors,
// a pause is shown, and nothing is fetched when the page is viewed.
func TestReportPage(t *testing.T) {
	evs := tracetest.IIS()
	// smreghost is not an agent: the lab keeps it out of the steps and
	// the diagram, not out of the table.
	l := tracetest.NewLab()
	l.T = evs[0].T.Add(-time.Second)
	reg := l.Connect("smreghost", 99, 50001, "smps2.shared.lab", trace.PhaseAdmin)
	l.Do(reg, "RegisterHost trust_wa1", "SUCCESS")
	l.Close(reg)
	evs = append(l.Events, evs...)
	agents := func(e trace.Event) bool { return e.Role == "hla" || e.Role == "llawp" }
	keep := procmon.All(procmon.SocketOps, procmon.Between("wa1.shared.lab", tracetest.Servers...))
	side := Side{Label: "IIS", Events: evs, Host: "wa1.shared.lab", Servers: tracetest.Servers, Agents: agents, Table: keep, TableWhat: "the seed's filter"}
	other := side
	other.Label = "again"
	page := renderReport(t, side, other)

	for _, bad := range []string{"<script", "<link", "src=", "url(", "https:", "@import"} {
		if strings.Contains(page, bad) {
			t.Errorf("page has %q: it must need nothing from elsewhere", bad)
		}
	}
	if n := strings.Count(page, "http:"); n != 2 || strings.Count(page, `xmlns="http://www.w3.org/2000/svg"`) != 2 {
		t.Errorf("%d http: in the page, want only the two diagrams' xmlns", n)
	}

	var agentEvs []trace.Event
	for _, e := range evs {
		if agents(e) {
			agentEvs = append(agentEvs, e)
		}
	}
	steps := narrative.Narrate(agentEvs, "wa1.shared.lab", tracetest.Servers)
	plain := html.UnescapeString(regexp.MustCompile(`<[^>]+>`).ReplaceAllString(page, ""))
	for _, s := range steps {
		if strings.Count(plain, fmt.Sprintf("Step %d: %s", s.N, s.Text)) != 2 {
			t.Errorf("step %d is not on both sides: %s", s.N, s.Text)
		}
	}
	for _, id := range []string{"s0-step-1", "s1-step-1", "s0-row-1", "s1-row-1"} {
		if strings.Count(page, `id="`+id+`"`) != 1 {
			t.Errorf("anchor %s is not on the page once", id)
		}
	}
	if strings.Contains(page, "smreghost (99)") {
		t.Error("smreghost has a lane: the diagram tells the agents only")
	}
	if !strings.Contains(plain, "5.0 s later") {
		t.Error("no row marks the 5 s between two polls")
	}

	var text bytes.Buffer
	if _, err := procmon.WriteTable(&text, evs, keep, procmon.Filter{}, 0); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(strings.TrimSpace(text.String()), "\n")[1:] {
		want = append(want, strings.Join(strings.Fields(line), " "))
	}
	rowRE := regexp.MustCompile(`(?s)<tr class="op-[a-z]+">(.*?)</tr>`)
	cellRE := regexp.MustCompile(`<td[^>]*>(.*?)</td>`)
	rows := rowRE.FindAllStringSubmatch(page, -1)
	if len(rows) != 2*len(want) {
		t.Fatalf("%d table rows, want %d on each of 2 sides", len(rows), len(want))
	}
	for i, r := range rows[:len(want)] {
		var cells []string
		for _, c := range cellRE.FindAllStringSubmatch(r[1], -1) {
			cells = append(cells, html.UnescapeString(c[1]))
		}
		if got := strings.Join(strings.Fields(strings.Join(cells, " ")), " "); got != want[i] {
			t.Errorf("row %d:\n got %s\nwant %s", i, got, want[i])
		}
	}
	if !strings.Contains(page, fmt.Sprintf("%d rows (the seed&#39;s filter)", len(want))) {
		t.Error("the table's title does not say its rows and filter")
	}
	header := "<tr><th>Time of Day</th><th>Process Name</th><th>PID</th><th>Operation</th><th>Path</th><th>Result</th><th>Detail</th></tr>"
	if strings.Count(page, header) != 2 {
		t.Errorf("the tables' header is not Process Monitor's columns, %s", header)
	}
	// The bootstrap resets, as Process Monitor shows them, still marked.
	resets := regexp.MustCompile(`<tr class="op-reset"><td>[^<]*</td><td>(w3wp.exe|LLAWP.exe)</td><td class="num">\d+</td><td>TCP Disconnect</td>` +
		`<td>wa1.shared.lab:\d+ -&gt; smps2.shared.lab:44443</td><td>SUCCESS</td><td>Length: 0, seqnum: \d+, reset: RST sent</td></tr>`)
	if n := len(resets.FindAllString(page, -1)); n != 4 {
		t.Errorf("%d bootstrap reset rows, want w3wp.exe's and LLAWP.exe's on each side", n)
	}

	// A Process Monitor filter narrows the rows after the seed's filter,
	// and the title says so.
	f := side
	cond, err := procmon.ParseCondition("Process Name is LLAWP.exe")
	if err != nil {
		t.Fatal(err)
	}
	f.Procmon, f.TableWhat = procmon.Filter{Include: []procmon.Condition{cond}}, "the seed's filter; then include Process Name is LLAWP.exe"
	page = renderReport(t, f)
	rows = rowRE.FindAllStringSubmatch(page, -1)
	llawp := 0
	for _, w := range want {
		if strings.Contains(w, " LLAWP.exe ") {
			llawp++
		}
	}
	if len(rows) != llawp || llawp == 0 {
		t.Errorf("%d rows with the filter, want LLAWP.exe's %d", len(rows), llawp)
	}
	for _, r := range rows {
		if !strings.Contains(r[1], "<td>LLAWP.exe</td>") {
			t.Errorf("row not LLAWP.exe's: %s", r[1])
		}
	}
	if !strings.Contains(page, fmt.Sprintf("%d rows (the seed&#39;s filter; then include Process Name is LLAWP.exe)", llawp)) {
		t.Error("the filtered table's title does not say its rows and filters")
	}
}

// failWriter fails every write, as a full disk does.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteReportError(t *testing.T) {
	err := Write(failWriter{}, Page{Title: "x", Sides: []Side{{Events: tracetest.IIS(), Host: "wa1.shared.lab"}}})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("error %v, want the writer's", err)
	}
}

// TestReportOddTraces: a trace with nothing to draw, or with events out of
// their usual order, still makes a page, and says what it lacks.
func TestReportOddTraces(t *testing.T) {
	l := tracetest.NewLab()
	c := l.Connect("w3wp.exe", 4242, 50135, "smps1.shared.lab", trace.PhaseRequests)
	orphans := []trace.Event{}
	for _, e := range l.Events {
		if e.Proc == "w3wp.exe" && e.Op == trace.OpHandshake {
			orphans = append(orphans, e)
		}
	}
	l.Events = nil
	l.Answer(c, "IsProtected GET /", "NO") // a response with no request
	l.Reset(c)
	orphans = append(orphans, l.Events...)
	var serverOnly []trace.Event
	for _, e := range tracetest.IIS() {
		if e.Proc == "smps" {
			serverOnly = append(serverOnly, e)
		}
	}
	for _, tc := range []struct {
		name   string
		evs    []trace.Event
		arrows int
		want   string
	}{
		{"empty", nil, 0, "nothing to draw"},
		{"servers only", serverOnly, 0, "nothing to draw"},
		{"no connect, no request", orphans, 5, "IsProtected: NO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := renderReport(t, Side{Label: tc.name, Events: tc.evs, Host: "wa1.shared.lab", Servers: tracetest.Servers})
			if _, n := drawnCounts(page); n != tc.arrows {
				t.Errorf("%d arrows, want %d", n, tc.arrows)
			}
			if !strings.Contains(page, tc.want) {
				t.Errorf("page does not say %q", tc.want)
			}
		})
	}
}
