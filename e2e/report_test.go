package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/trace"
)

// chromium finds a Chromium or Chrome to open report.html with, or skips:
// scripts/install-test-deps.sh installs Debian's chromium on a CI machine.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (scripts/install-test-deps.sh installs it): report.html is not checked in a browser")
	return ""
}

// runChromium runs headless Chromium once, with a profile of its own and
// nothing that reaches for the network: without these flags it waits for
// services a machine without internet never answers.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	// Only a guard against a hang: on a loaded 2-core machine (the
	// build-up lab runs beside it) Chromium took over 30 s once.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	// Chromium starts helper processes; on a timeout the whole group goes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.Bytes()
}

// wantArrows is what the diagram must draw, counted from trace.jsonl alone:
// per "phase/kind", the socket and protocol events of the web server's
// agent processes with the Policy Servers.
func wantArrows(evs []trace.Event, host string, servers []string) map[string]int {
	want := map[string]int{}
	for _, e := range evs {
		if e.Role != "hla" && e.Role != "llawp" || e.LocalHost != host {
			continue
		}
		known := false
		for _, s := range servers {
			known = known || e.RemoteHost == s
		}
		var kind string
		switch e.Op {
		case trace.OpConnect:
			kind = "connect"
			if e.Conn == "" {
				kind = "connect-failed"
			}
		case trace.OpHandshake:
			kind = "handshake"
		case trace.OpRequest:
			kind = "request"
		case trace.OpResponse:
			kind = "response"
		case trace.OpReset:
			kind = "reset"
		case trace.OpDisconnect:
			kind = "disconnect"
		case trace.OpServerState:
			kind = "state"
		}
		if kind == "" || !known {
			continue
		}
		phase := e.Phase
		if phase == "" {
			phase = "none"
		}
		want[phase+"/"+kind]++
	}
	return want
}

var (
	gTagRE  = regexp.MustCompile(`<g [^>]*class="arrow[ "][^>]*>`)
	dataRE  = regexp.MustCompile(`data-([a-z]+)="([^"]*)"`)
	svgHRE  = regexp.MustCompile(`<svg class="seq"[^>]* height="(\d+)"`)
	stepsRE = regexp.MustCompile(`<li id="s0-step-\d+"`)
	// tableRowRE is one row of the Process Monitor view.
	tableRowRE = regexp.MustCompile(`<tr class="op-[a-z]+">`)
)

// drawnArrows counts the arrows of a DOM per "phase/kind"; a "… and K
// more" row counts as the requests and responses it stands for.
func drawnArrows(dom string) (map[string]int, int) {
	got := map[string]int{}
	more := 0
	for _, tag := range gTagRE.FindAllString(dom, -1) {
		a := map[string]string{}
		for _, m := range dataRE.FindAllStringSubmatch(tag, -1) {
			a[m[1]] = m[2]
		}
		if a["kind"] == "more" {
			more++
			req, _ := strconv.Atoi(a["requests"])
			resp, _ := strconv.Atoi(a["responses"])
			got[a["phase"]+"/request"] += req
			got[a["phase"]+"/response"] += resp
			continue
		}
		got[a["phase"]+"/"+a["kind"]]++
	}
	return got, more
}

func countsText(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return b.String()
}

// TestReportHTML runs the seed lab and opens the report.html it wrote in
// headless Chromium: the diagram, after the browser parsed it, has one
// arrow per connect, handshake message, request, response, reset and
// disconnect that trace.jsonl shows, in each phase; its steps are the ones
// printed. The screenshot is kept for a reader (AGENTLAB_ARTIFACTS).
func TestReportHTML(t *testing.T) {
	browser := chromium(t)
	labFile, _ := seedLab(t)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--requests", "12", "--poll", "1s")
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	page := filepath.Join(out, "report.html")
	if !strings.Contains(r.stdout, "report.html (sequence diagram, steps, table): "+page+"\n") {
		t.Errorf("agentlab run does not print where report.html is:\n%s", r.stdout)
	}
	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}

	dom := string(runChromium(t, browser, "--dump-dom", "file://"+page))
	if !strings.Contains(dom, "</svg>") {
		t.Fatalf("the DOM Chromium loaded has no diagram:\n%.2000s", dom)
	}
	want := wantArrows(evs, "wa1.shared.lab", []string{"smps1.shared.lab", "smps2.shared.lab"})
	got, more := drawnArrows(dom)
	if countsText(got) != countsText(want) {
		t.Errorf("arrows per phase/kind in the browser:\n got %s\nwant %s(from trace.jsonl)", countsText(got), countsText(want))
	}
	// Two agent processes, each with its bootstrap connection (reset) and
	// its two HCO connections: the seed's picture, whatever the counts.
	for _, k := range []string{"bootstrap/connect", "bootstrap/reset", "hco/connect", "requests/request", "management/request"} {
		if got[k] == 0 {
			t.Errorf("no %s arrow", k)
		}
	}
	// 12 page loads over one socket are more than a connection draws.
	if more == 0 || !strings.Contains(dom, "… and ") {
		t.Errorf("no “… and K more” row for w3wp.exe's requests")
	}
	// The Process Monitor view after the browser parsed it: Process
	// Monitor's columns, one row per socket event of the web server host
	// with the Policy Servers, a reset shown as Process Monitor shows it.
	if !strings.Contains(dom, "<tr><th>Time of Day</th><th>Process Name</th><th>PID</th><th>Operation</th><th>Path</th><th>Result</th><th>Detail</th></tr>") {
		t.Error("the table's header is not Process Monitor's columns")
	}
	socket, resets := 0, 0
	for _, e := range evs {
		if procmon.SocketOps(e) && e.LocalHost == "wa1.shared.lab" && strings.HasPrefix(e.RemoteHost, "smps") {
			socket++
			if e.Op == trace.OpReset {
				resets++
			}
		}
	}
	if n := len(tableRowRE.FindAllString(dom, -1)); n != socket {
		t.Errorf("report.html's table has %d rows, trace.jsonl %d socket events of wa1.shared.lab with the Policy Servers", n, socket)
	}
	shown := regexp.MustCompile(`<tr class="op-reset">(?:<td[^>]*>[^<]*</td>){3}<td>TCP Disconnect</td>(?:<td>[^<]*</td>){2}<td>Length: 0, seqnum: \d+, reset: RST sent</td></tr>`)
	if n := len(shown.FindAllString(dom, -1)); n != resets || resets < 2 {
		t.Errorf("%d rows show a reset as a TCP Disconnect saying so, the trace has %d resets", n, resets)
	}
	printed := strings.Count(r.stdout, "\nStep ")
	if n := len(stepsRE.FindAllString(dom, -1)); n != printed || n < 4 {
		t.Errorf("report.html has %d steps, agentlab run printed %d", n, printed)
	}

	// A screenshot tall enough for the steps and the whole diagram.
	m := svgHRE.FindStringSubmatch(dom)
	if m == nil {
		t.Fatal("no diagram height in the DOM")
	}
	svgH, _ := strconv.Atoi(m[1])
	height := min(svgH+1300, 10000)
	shot := filepath.Join(out, "report.png")
	runChromium(t, browser, "--screenshot="+shot, fmt.Sprintf("--window-size=1400,%d", height), "file://"+page)
	checkScreenshot(t, shot, 1400, height)
	t.Logf("screenshot: %s", shot)
	if dir := os.Getenv("AGENTLAB_ARTIFACTS"); dir != "" {
		for _, f := range []string{shot, page} {
			dst := filepath.Join(dir, "TestReportHTML-"+filepath.Base(f))
			if err := copyFile(f, dst); err != nil {
				t.Errorf("keeping %s: %v", f, err)
				continue
			}
			t.Logf("artifact: %s", dst)
		}
	}
}

// checkScreenshot checks that Chromium drew the page: a PNG of the window's
// size that shows the bootstrap and HCO colours of the diagram's arrows.
func checkScreenshot(t *testing.T, path string, w, h int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("screenshot is %dx%d, want the window's %dx%d", b.Dx(), b.Dy(), w, h)
	}
	// The page's .p-bootstrap and .p-hco colours: the steps' borders and
	// the legend have a few hundred pixels of each, the diagram's arrows
	// thousands.
	for name, c := range map[string][3]int{"bootstrap": {0xc2, 0x41, 0x0c}, "hco": {0x1d, 0x4e, 0xd8}} {
		n := pixels(img, c)
		t.Logf("%d pixels of the %s colour", n, name)
		if n < 3000 {
			t.Errorf("screenshot has %d pixels of the %s colour: the diagram was not drawn", n, name)
		}
	}
}

func pixels(img image.Image, c [3]int) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(int(r>>8), c[0]) && near(int(g>>8), c[1]) && near(int(bl>>8), c[2]) {
				n++
			}
		}
	}
	return n
}

func near(a, b int) bool { return a-b <= 6 && b-a <= 6 }

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
