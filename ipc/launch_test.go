package ipc_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
)

type syncBuffer = testsupport.Buffer

// gone reports whether pid has exited; a zombie has.
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	testsupport.WaitFor(t, within, fmt.Sprintf("process %d to end", pid), func() bool { return gone(pid) })
}

func launchFake(t *testing.T, log zerolog.Logger) *ipc.Owner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := ipc.Launch(ctx, ipc.LaunchConfig{
		Path: os.Args[0], Args: helperArgs, Env: []string{helperEnv + "=plugin"},
		Logger: log, SocketDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Kill)
	return o
}

func TestLaunchEndToEnd(t *testing.T) {
	var logs syncBuffer
	o := launchFake(t, zerolog.New(&logs).Level(zerolog.InfoLevel))
	if o.PID() <= 0 || o.PID() == os.Getpid() {
		t.Fatalf("LLAWP pid %d", o.PID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := o.LLAWP()

	id, err := l.Register(ctx, ipc.Worker{PID: os.Getpid(), Name: "w3wp.exe", Role: "hla"})
	if err != nil {
		t.Fatal(err)
	}

	wctx, wcancel := context.WithCancel(ctx)
	events, err := l.Watch(wctx, id)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Code != uint32(tlipb.ManagementCode_FLUSH_ALL) || ev.Name != "FLUSH_ALL" || ev.Seq != 1 || ev.Time.IsZero() {
			t.Errorf("event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no management event")
	}
	wcancel()
	for range events {
		// The channel closes once the watch is cancelled.
	}

	if _, err := l.Watch(ctx, 999); !errors.Is(err, ipc.ErrUnknownWorker) {
		t.Errorf("Watch of an unknown worker: %v, want ErrUnknownWorker", err)
	}
	if err := l.Unregister(ctx, 999); !errors.Is(err, ipc.ErrUnknownWorker) {
		t.Errorf("Unregister of an unknown worker: %v, want ErrUnknownWorker", err)
	}

	s, err := l.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r := ipc.LogRecord{Time: time.Now(), Level: "info", PID: os.Getpid(), TID: 7, Proc: "w3wp.exe", Role: "hla",
			Message: fmt.Sprintf("record %d", i), Fields: []byte(`{"n":1}`), Worker: id}
		if err := s.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := s.CloseAndSummary()
	if err != nil || sum.Received != 3 {
		t.Fatalf("summary %+v, %v; want 3 received", sum, err)
	}

	sockets := []ipc.ServerSockets{{Addr: "smps1.shared.lab:44443", State: "Active", Open: 2, Busy: 1, Opened: 3, Requests: 40}}
	if err := l.Report(ctx, id, sockets); err != nil {
		t.Fatal(err)
	}
	if err := l.Report(ctx, id+100, sockets); !errors.Is(err, ipc.ErrUnknownWorker) {
		t.Errorf("Report for an unknown worker: %v, want ErrUnknownWorker", err)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != o.PID() || len(st.Workers) != 1 || st.Workers[0].LogRecords != 3 || st.Workers[0].Name != "w3wp.exe" || st.Workers[0].Registered.IsZero() {
		t.Errorf("status %+v", st)
	}
	if w := st.Workers[0]; !slices.Equal(w.Servers, sockets) || w.Reported.IsZero() {
		t.Errorf("status shows sockets %+v reported %v, want %+v", w.Servers, w.Reported, sockets)
	}

	// A second worker joins as an Apache child would, then leaves: the
	// LLAWP must keep serving the owner.
	a, err := ipc.Attach(ctx, o.ReattachJSON())
	if err != nil {
		t.Fatal(err)
	}
	if a.PID() != o.PID() {
		t.Errorf("attached pid %d, owner says %d", a.PID(), o.PID())
	}
	id2, err := a.Register(ctx, ipc.Worker{PID: os.Getpid(), Name: "httpd", Role: "hla"})
	if err != nil || id2 == id {
		t.Fatalf("attached Register: %v, %v", id2, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Status(ctx); err != nil || len(st.Workers) != 2 {
		t.Fatalf("after an attached worker closed: %+v, %v", st, err)
	}

	pid := o.PID()
	o.Kill()
	select {
	case <-o.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("Exited not closed after Kill")
	}
	waitGone(t, pid, 5*time.Second)
	if _, err := l.Status(ctx); err == nil {
		t.Error("Status answered after Kill")
	}
	if _, err := ipc.Attach(ctx, o.ReattachJSON()); err == nil {
		t.Error("Attach to a killed LLAWP succeeded")
	}

	// The fake's warning on its stderr came through go-plugin into the
	// owner's logger, still a warning.
	var found bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"message":"fake llawp up"`) {
			found = strings.Contains(line, `"level":"warn"`) && strings.Contains(line, `"probe":"stderr"`) && strings.Contains(line, `"plugin_pid"`)
			if !found {
				t.Errorf("plugin stderr line lost its level or fields: %s", line)
			}
		}
	}
	if !found {
		t.Errorf("the LLAWP's stderr warning is not in the owner's log:\n%s", logs.String())
	}
}

func TestOwnerDeathStopsLLAWP(t *testing.T) {
	cmd := exec.Command(os.Args[0], helperArgs...)
	cmd.Env = append(os.Environ(), helperEnv+"=owner", "SOCKET_DIR="+t.TempDir())
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var pid int
	select {
	case line := <-lines:
		if _, err := fmt.Sscanf(line, "llawp pid %d", &pid); err != nil {
			t.Fatalf("owner said %q (stderr: %s)", line, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the owner did not launch its LLAWP (stderr: %s)", stderr.String())
	}
	if gone(pid) {
		t.Fatalf("LLAWP %d is not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	waitGone(t, pid, 5*time.Second)
}

func TestLaunchRefusesNonPlugin(t *testing.T) {
	// /bin/true exits without a handshake: Launch must fail, not hang.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ipc.Launch(ctx, ipc.LaunchConfig{Path: "/bin/true", Logger: zerolog.Nop()})
	if err == nil {
		t.Fatal("Launch of a binary that is no plugin succeeded")
	}
}

func TestServeWithoutCookie(t *testing.T) {
	if ipc.LaunchedByOwner() {
		t.Skip("the test itself runs under go-plugin")
	}
	if err := ipc.NewServer(newFake(), zerolog.Nop()).Serve(); !errors.Is(err, ipc.ErrNotLaunched) {
		t.Fatalf("Serve without the cookie: %v, want ErrNotLaunched", err)
	}
}

func TestParseReattach(t *testing.T) {
	tests := []struct {
		name, in, err string
	}{
		{"unix", `{"protocol":"grpc","protocol_version":1,"network":"unix","addr":"/tmp/plugin1","pid":42}`, ""},
		{"tcp", `{"protocol":"grpc","protocol_version":1,"network":"tcp","addr":"127.0.0.1:10000","pid":42}`, ""},
		{"netrpc", `{"protocol":"netrpc","protocol_version":1,"network":"unix","addr":"/tmp/p","pid":42}`, "protocol"},
		{"version", `{"protocol":"grpc","protocol_version":2,"network":"unix","addr":"/tmp/p","pid":42}`, "version"},
		{"no addr", `{"protocol":"grpc","protocol_version":1,"network":"unix","pid":42}`, "address"},
		{"unknown field", `{"protocol":"grpc","protocol_version":1,"network":"unix","addr":"/p","Test":true}`, "unknown field"},
		{"not json", `pid=42`, "reattach"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ipc.ParseReattach(tt.in)
			if tt.err == "" {
				if err != nil || r.PID != 42 {
					t.Fatalf("%+v, %v", r, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want one about %q", err, tt.err)
			}
		})
	}
}
