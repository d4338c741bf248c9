package tli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

// newSession dials a server whose sessions run handle, and returns both ends.
func newSession(t *testing.T, handle func(*ServerConn)) (*Client, *traceBuffer) {
	t.Helper()
	ts := startServer(t, serverConfig(), handle)
	rec, tb := recorder("w3wp.exe")
	cfg := clientConfig()
	cfg.Recorder = rec
	c := dial(t, ts.addr, cfg)
	if r := ts.result(t); r.err != nil {
		t.Fatal(r.err)
	}
	return c, tb
}

// readErrors runs a server that answers requests and reports the error
// that ends its ReadRequest loop.
func readErrors(errs chan<- error) func(*ServerConn) {
	return func(sc *ServerConn) {
		var req tlipb.Request
		for {
			req.Reset()
			if err := sc.ReadRequest(&req); err != nil {
				errs <- err
				return
			}
			if err := sc.WriteResponse(&req, &tlipb.Response{Result: tlipb.Result_YES}); err != nil {
				errs <- err
				return
			}
		}
	}
}

func waitErr(t *testing.T, errs <-chan error) error {
	t.Helper()
	select {
	case err := <-errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the server is still reading")
	}
	return nil
}

func TestDoDeadlineBreaksClient(t *testing.T) {
	// The server reads the request and never answers.
	c, tb := newSession(t, func(sc *ServerConn) {
		var req tlipb.Request
		for sc.ReadRequest(&req) == nil {
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Do(ctx, isProtected("/slow"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want the context's deadline", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}
	if c.Err() == nil {
		t.Fatal("the client is still usable after a timed-out request")
	}
	sends := countOp(tb.events(t), trace.OpSend)
	start = time.Now()
	_, err = c.Do(context.Background(), isProtected("/next"))
	if !errors.Is(err, ErrBroken) {
		t.Fatalf("%v, want ErrBroken", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("a broken client took %v to fail", d)
	}
	if countOp(tb.events(t), trace.OpSend) != sends {
		t.Error("a broken client sent something")
	}
}

func countOp(evs []trace.Event, op string) int {
	n := 0
	for _, e := range evs {
		if e.Op == op {
			n++
		}
	}
	return n
}

func TestDoCancelledMidRequest(t *testing.T) {
	c, _ := newSession(t, func(sc *ServerConn) {
		var req tlipb.Request
		for sc.ReadRequest(&req) == nil {
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.Do(ctx, isProtected("/")); !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
	if c.Err() == nil {
		t.Error("the client is still usable")
	}
}

func TestDoNotSentKeepsClient(t *testing.T) {
	c, _ := newSession(t, echo)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Do(ctx, isProtected("/")); !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
	huge := &tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{Password: strings.Repeat("x", MaxFrame)}}}
	if _, err := c.Do(context.Background(), huge); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("%v", err)
	}
	if c.Err() != nil {
		t.Fatalf("a request that never left broke the client: %v", c.Err())
	}
	resp, err := c.Do(context.Background(), isProtected("/after"))
	if err != nil || resp.Message != "IsProtected GET /after" {
		t.Fatalf("%v, %v", resp, err)
	}
}

func TestMismatchedResponseID(t *testing.T) {
	c, _ := newSession(t, func(sc *ServerConn) {
		var req tlipb.Request
		if sc.ReadRequest(&req) != nil {
			return
		}
		sc.WriteResponse(&tlipb.Request{Id: req.Id + 1}, &tlipb.Response{Result: tlipb.Result_YES})
		for sc.ReadRequest(&req) == nil {
		}
	})
	_, err := c.Do(context.Background(), isProtected("/"))
	if err == nil || !strings.Contains(err.Error(), "response id 2 does not answer request id 1") {
		t.Fatalf("%v", err)
	}
	if c.Err() == nil {
		t.Error("a client out of step is still usable")
	}
}

func TestReplayedRequestFailsToOpen(t *testing.T) {
	errs := make(chan error, 1)
	c, tb := newSession(t, readErrors(errs))
	if _, err := c.Do(context.Background(), isProtected("/once")); err != nil {
		t.Fatal(err)
	}
	var last []byte
	for _, e := range tb.events(t) {
		if e.Op == trace.OpSend {
			last = e.Data
		}
	}
	if len(last) < HeaderSize || last[HeaderSize-1] != FrameRequest {
		t.Fatalf("last send is not a request frame: %x", last)
	}
	if _, err := c.Conn().Write(last); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, errs); !errors.Is(err, errBadFrame) {
		t.Fatalf("server: %v, want a frame that fails to open", err)
	}
}

func TestServerRejectsWrongFrameType(t *testing.T) {
	errs := make(chan error, 1)
	c, _ := newSession(t, readErrors(errs))
	c.Conn().Write(mustFrame(FrameResponse, make([]byte, 20)))
	if err := waitErr(t, errs); err == nil || !strings.Contains(err.Error(), "got a Response frame instead of a request") {
		t.Fatalf("%v", err)
	}
}

func TestServerRejectsSealedGarbage(t *testing.T) {
	errs := make(chan error, 1)
	c, _ := newSession(t, readErrors(errs))
	c.Conn().Write(mustFrame(FrameRequest, bytes.Repeat([]byte{1}, 40)))
	if err := waitErr(t, errs); !errors.Is(err, errBadFrame) || IsClosed(err) || IsTimeout(err) {
		t.Fatalf("%v", err)
	}
}

func TestClientResetIsSeenByServer(t *testing.T) {
	errs := make(chan error, 1)
	c, tb := newSession(t, readErrors(errs))
	if _, err := c.Do(context.Background(), isProtected("/")); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	err := waitErr(t, errs)
	if !errors.Is(err, syscall.ECONNRESET) || !IsClosed(err) {
		t.Fatalf("server: %v, want a reset", err)
	}
	evs := tb.events(t)
	if last := evs[len(evs)-1]; last.Op != trace.OpReset {
		t.Errorf("last client event %s", last.Op)
	}
}

func TestClientCloseIsSeenByServer(t *testing.T) {
	errs := make(chan error, 1)
	c, _ := newSession(t, readErrors(errs))
	c.Close()
	if err := waitErr(t, errs); err != io.EOF || !IsClosed(err) {
		t.Fatalf("server: %v, want EOF", err)
	}
	if _, err := c.Do(context.Background(), isProtected("/")); err == nil || c.Err() == nil {
		t.Fatalf("Do on a closed client: %v", err)
	}
}

func TestServerGoneIsSeenByClient(t *testing.T) {
	c, _ := newSession(t, func(sc *ServerConn) {
		var req tlipb.Request
		sc.ReadRequest(&req)
		// returns: startServer closes the connection unanswered
	})
	_, err := c.Do(context.Background(), isProtected("/"))
	if !IsClosed(err) {
		t.Fatalf("%v, want the server's close", err)
	}
}

func TestErrDoesNotWaitForDo(t *testing.T) {
	received, release := make(chan struct{}), make(chan struct{})
	c, _ := newSession(t, func(sc *ServerConn) {
		var req tlipb.Request
		if sc.ReadRequest(&req) != nil {
			return
		}
		close(received) // Do holds the client until the answer
		<-release
		sc.WriteResponse(&req, &tlipb.Response{})
	})
	done := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), isProtected("/"))
		done <- err
	}()
	<-received
	// The exchange cannot end before release is closed, so an Err() that
	// waited for it would not return; the bound only catches that hang.
	errDone := make(chan error, 1)
	go func() { errDone <- c.Err() }()
	select {
	case err := <-errDone:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Err() waits for the exchange in flight")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentDo(t *testing.T) {
	c, _ := newSession(t, echo)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				req := isProtected(strings.Repeat("/x", g*i))
				resp, err := c.Do(context.Background(), req)
				if err != nil {
					t.Error(err)
					return
				}
				if resp.Message != Describe(req) {
					t.Errorf("answer %q to %q", resp.Message, Describe(req))
				}
			}
		})
	}
	wg.Wait()
}

// A context cancelled right as an exchange finishes must not leave a
// deadline behind that breaks the next exchange.
func TestLateCancelDoesNotBreakNextDo(t *testing.T) {
	c, _ := newSession(t, echo)
	for i := range 300 {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(time.Duration(i%40) * time.Microsecond)
			cancel()
		}()
		_, err := c.Do(ctx, isProtected("/"))
		cancel()
		if err != nil {
			// Cancelled mid-request: the client is rightly broken; start over.
			if c.Err() != nil {
				c.Close()
				c, _ = newSession(t, echo)
			}
			continue
		}
		time.Sleep(50 * time.Microsecond)
		if _, err := c.Do(context.Background(), isProtected("/next")); err != nil {
			t.Fatalf("iteration %d: an exchange that succeeded broke the next one: %v", i, err)
		}
	}
}

func TestResponseLargerThanBuffer(t *testing.T) {
	c, _ := newSession(t, func(sc *ServerConn) {
		var req tlipb.Request
		for sc.ReadRequest(&req) == nil {
			msg := strings.Repeat("m", int(req.Id)*100000)
			if sc.WriteResponse(&req, &tlipb.Response{Result: tlipb.Result_NO, Message: msg}) != nil {
				return
			}
		}
	})
	for i := 1; i <= 5; i++ {
		resp, err := c.Do(context.Background(), isProtected("/"))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Message) != i*100000 {
			t.Fatalf("response %d: %d bytes", i, len(resp.Message))
		}
	}
}

func TestWriteResponseTooLarge(t *testing.T) {
	errs := make(chan error, 1)
	c, _ := newSession(t, func(sc *ServerConn) {
		var req tlipb.Request
		if sc.ReadRequest(&req) != nil {
			return
		}
		errs <- sc.WriteResponse(&req, &tlipb.Response{Message: strings.Repeat("m", MaxFrame)})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	go c.Do(ctx, isProtected("/"))
	if err := waitErr(t, errs); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("%v", err)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		req  *tlipb.Request
		want string
	}{
		{&tlipb.Request{Body: &tlipb.Request_GetHostConfig{GetHostConfig: &tlipb.GetHostConfigRequest{Name: "hco.smps1"}}}, "GetHostConfig hco.smps1"},
		{&tlipb.Request{Body: &tlipb.Request_GetAgentConfig{GetAgentConfig: &tlipb.GetAgentConfigRequest{Name: "aco"}}}, "GetAgentConfig aco"},
		{&tlipb.Request{Body: &tlipb.Request_SetAgentInfo{SetAgentInfo: &tlipb.SetAgentInfoRequest{AgentName: "wa1"}}}, "SetAgentInfo wa1"},
		{isProtected("/protected/"), "IsProtected GET /protected/"},
		{&tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{User: "alice", Realm: "r1"}}}, "Login alice realm r1"},
		{&tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{Action: "POST", Resource: "/a"}}}, "Authorize POST /a"},
		{&tlipb.Request{Body: &tlipb.Request_Logout{Logout: &tlipb.LogoutRequest{}}}, "Logout"},
		{&tlipb.Request{Body: &tlipb.Request_DoManagement{DoManagement: &tlipb.DoManagementRequest{Command: "GET_AGENT_COMMANDS"}}}, "DoManagement GET_AGENT_COMMANDS"},
		{&tlipb.Request{Body: &tlipb.Request_RegisterHost{RegisterHost: &tlipb.RegisterHostRequest{TrustedHost: "trust_wa2"}}}, "RegisterHost trust_wa2"},
		{&tlipb.Request{Body: &tlipb.Request_QueueManagement{QueueManagement: &tlipb.QueueManagementRequest{Command: &tlipb.ManagementCommand{Name: "FLUSH_ALL"}}}}, "QueueManagement FLUSH_ALL"},
		{&tlipb.Request{}, "empty request"},
		{nil, "empty request"},
		// Bodies built by hand with a nil message.
		{&tlipb.Request{Body: &tlipb.Request_GetHostConfig{}}, "GetHostConfig "},
		{&tlipb.Request{Body: &tlipb.Request_IsProtected{}}, "IsProtected  "},
		{&tlipb.Request{Body: &tlipb.Request_Login{}}, "Login  realm "},
		{&tlipb.Request{Body: &tlipb.Request_QueueManagement{}}, "QueueManagement "},
	}
	for _, tc := range tests {
		if got := Describe(tc.req); got != tc.want {
			t.Errorf("Describe = %q, want %q", got, tc.want)
		}
	}

	hco := &tlipb.Request{Body: &tlipb.Request_GetHostConfig{GetHostConfig: &tlipb.GetHostConfigRequest{Name: "hco"}}}
	responses := []struct {
		resp *tlipb.Response
		want string
	}{
		{&tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_HostConfig{HostConfig: &tlipb.HostConfig{Name: "hco", PolicyServers: make([]*tlipb.PolicyServerAddr, 2)}}}, "GetHostConfig hco: SUCCESS (HCO hco, 2 servers)"},
		{&tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_AgentConfig{AgentConfig: &tlipb.AgentConfig{Name: "aco"}}}, "GetHostConfig hco: SUCCESS (ACO aco)"},
		{&tlipb.Response{Body: &tlipb.Response_DoManagement{DoManagement: &tlipb.DoManagementResponse{Commands: make([]*tlipb.ManagementCommand, 3)}}}, "GetHostConfig hco: SUCCESS (3 commands)"},
		{&tlipb.Response{Result: tlipb.Result_FAILURE, Message: "no such HCO"}, "GetHostConfig hco: FAILURE - no such HCO"},
		{&tlipb.Response{Result: tlipb.Result_YES, Message: "not shown"}, "GetHostConfig hco: YES"},
		{&tlipb.Response{Result: tlipb.Result_NOCONNECTION}, "GetHostConfig hco: NOCONNECTION"},
		{&tlipb.Response{Body: &tlipb.Response_HostConfig{}}, "GetHostConfig hco: SUCCESS (HCO , 0 servers)"},
		{nil, "GetHostConfig hco: SUCCESS"},
	}
	for _, tc := range responses {
		if got := DescribeResponse(hco, tc.resp); got != tc.want {
			t.Errorf("DescribeResponse = %q, want %q", got, tc.want)
		}
	}
}

// TestTraceEventFields: a request's and a response's trace events say as
// fields what their notes say as text, for renderers that must not parse
// notes.
func TestTraceEventFields(t *testing.T) {
	hco := &tlipb.Request{Body: &tlipb.Request_GetHostConfig{GetHostConfig: &tlipb.GetHostConfigRequest{Name: "hco"}}}
	isp := &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{Action: "GET", Resource: "/p/"}}}
	mgmt := &tlipb.Request{Body: &tlipb.Request_DoManagement{DoManagement: &tlipb.DoManagementRequest{Command: "GET_AGENT_COMMANDS"}}}
	tests := []struct {
		name string
		got  trace.Event
		want trace.Event
	}{
		{"request", requestEvent(hco, 9), trace.Event{Op: trace.OpRequest, Len: 9, Note: "GetHostConfig hco", Request: trace.ReqGetHostConfig, Subject: "hco"}},
		{"logout", requestEvent(&tlipb.Request{Body: &tlipb.Request_Logout{Logout: &tlipb.LogoutRequest{}}}, 1),
			trace.Event{Op: trace.OpRequest, Len: 1, Note: "Logout", Request: trace.ReqLogout}},
		{"empty", requestEvent(&tlipb.Request{}, 1), trace.Event{Op: trace.OpRequest, Len: 1, Note: "empty request"}},
		{"hco", responseEvent(hco, &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_HostConfig{HostConfig: &tlipb.HostConfig{Name: "hco", PolicyServers: make([]*tlipb.PolicyServerAddr, 2)}}}, 7),
			trace.Event{Op: trace.OpResponse, Len: 7, Note: "GetHostConfig hco: SUCCESS (HCO hco, 2 servers)", Request: trace.ReqGetHostConfig, Subject: "hco", Result: "SUCCESS", Body: "HCO hco, 2 servers"}},
		{"no with a message", responseEvent(isp, &tlipb.Response{Result: tlipb.Result_NO, Message: "not protected"}, 3),
			trace.Event{Op: trace.OpResponse, Len: 3, Note: "IsProtected GET /p/: NO - not protected", Request: trace.ReqIsProtected, Subject: "GET /p/", Result: "NO", Message: "not protected"}},
		{"yes hides its message", responseEvent(isp, &tlipb.Response{Result: tlipb.Result_YES, Message: "not shown"}, 3),
			trace.Event{Op: trace.OpResponse, Len: 3, Note: "IsProtected GET /p/: YES", Request: trace.ReqIsProtected, Subject: "GET /p/", Result: "YES"}},
		{"polls", responseEvent(mgmt, &tlipb.Response{Body: &tlipb.Response_DoManagement{DoManagement: &tlipb.DoManagementResponse{}}}, 4),
			trace.Event{Op: trace.OpResponse, Len: 4, Note: "DoManagement GET_AGENT_COMMANDS: SUCCESS (0 commands)", Request: trace.ReqDoManagement, Subject: "GET_AGENT_COMMANDS", Result: "SUCCESS", Body: "0 commands"}},
		{"refusal", refusalEvent(12, CodeSecretIncorrect, CodeText(CodeSecretIncorrect)),
			trace.Event{Op: trace.OpHandshake, Len: 12, Note: fmt.Sprintf("refused: %d %s", CodeSecretIncorrect, CodeText(CodeSecretIncorrect)),
				Handshake: trace.HandshakeError, Code: CodeSecretIncorrect, Message: CodeText(CodeSecretIncorrect)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("event\n%+v\nwant\n%+v", tc.got, tc.want)
			}
		})
	}
}

func TestIsTimeoutIsClosed(t *testing.T) {
	tests := []struct {
		err             error
		timeout, closed bool
	}{
		{io.EOF, false, true},
		{&FrameError{Err: io.ErrUnexpectedEOF}, false, true},
		{syscall.ECONNRESET, false, true},
		{&FrameError{Err: context.DeadlineExceeded}, true, false},
		{errBadFrame, false, false},
		{nil, false, false},
	}
	for _, tc := range tests {
		if IsTimeout(tc.err) != tc.timeout || IsClosed(tc.err) != tc.closed {
			t.Errorf("%v: timeout %v closed %v", tc.err, IsTimeout(tc.err), IsClosed(tc.err))
		}
	}
}
