package wireshark

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

const (
	trustedHost = "trust_wa1"
	serverName  = "smps1.shared.lab"
)

var secret = []byte("the lab's shared secret, 32 b...")

// lockedBuffer is a key log or trace shared by goroutines.
type lockedBuffer = testsupport.Buffer

// answer is the test Policy Server's policy: enough of each response body
// that the dissector has every message of tli.proto to decode.
func answer(req *tlipb.Request) *tlipb.Response {
	ok := func() *tlipb.Response { return &tlipb.Response{Result: tlipb.Result_SUCCESS} }
	ps := &tlipb.PolicyServerAddr{Host: serverName, AccountingPort: 44441, AuthenticationPort: 44442, AuthorizationPort: 44443}
	switch b := req.Body.(type) {
	case *tlipb.Request_GetHostConfig:
		if b.GetHostConfig.Name != "hco.smps1" {
			return &tlipb.Response{Result: tlipb.Result_FAILURE, Message: "no HCO " + b.GetHostConfig.Name}
		}
		r := ok()
		r.Body = &tlipb.Response_HostConfig{HostConfig: &tlipb.HostConfig{
			Name: "hco.smps1", PolicyServers: []*tlipb.PolicyServerAddr{ps}, EnableFailover: true,
			MinSocketsPerPort: 2, NewSocketStep: 2, MaxSocketsPerPort: 20, RequestTimeoutSeconds: 60,
			Clusters: []*tlipb.Cluster{{Servers: []*tlipb.PolicyServerAddr{ps, {Host: "smps2.shared.lab", AuthorizationPort: 44443}}}},
		}}
		return r
	case *tlipb.Request_GetAgentConfig:
		r := ok()
		r.Body = &tlipb.Response_AgentConfig{AgentConfig: &tlipb.AgentConfig{
			Name: b.GetAgentConfig.Name, DefaultAgentName: "wa1", AgentNames: []string{"wa1,127.0.0.11", "wa1b,127.0.0.12"},
			PsPollIntervalSeconds: 30, LogFile: true, LogFileName: "WA.log", Extra: map[string]string{"CookieDomain": ".shared.lab"},
		}}
		return r
	case *tlipb.Request_IsProtected:
		if b.IsProtected.Resource == "/" {
			return &tlipb.Response{Result: tlipb.Result_NO, Message: "not protected"}
		}
		return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_IsProtected{IsProtected: &tlipb.IsProtectedResponse{
			Realm: "realm.protected", AuthScheme: "basic", RealmOid: "06-0001"}}}
	case *tlipb.Request_Login:
		if b.Login.Password != "Passw0rd1" {
			return &tlipb.Response{Result: tlipb.Result_FAILURE, Message: "wrong password"}
		}
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_Login{Login: &tlipb.LoginResponse{
			SessionToken: "token-user1", UserDn: "uid=user1,ou=People,dc=shared,dc=lab", ExpiresUnix: 1795655947, IdleTimeoutSeconds: 3600}}}
	case *tlipb.Request_Authorize:
		return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_Authorize{Authorize: &tlipb.AuthorizeResponse{
			Headers: []*tlipb.Header{{Name: "SM_USER", Value: "user1"}, {Name: "SM_USERDN", Value: "uid=user1,ou=People,dc=shared,dc=lab"}},
			Policy:  "policy.protected"}}}
	case *tlipb.Request_DoManagement:
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_DoManagement{DoManagement: &tlipb.DoManagementResponse{
			Commands: []*tlipb.ManagementCommand{{Code: 194, Name: "FLUSH_ALL"}, {Code: 196, Name: "FLUSH_USER", Arg: "uid=user1"}}}}}
	case *tlipb.Request_RegisterHost:
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_RegisterHost{RegisterHost: &tlipb.RegisterHostResponse{
			SharedSecret: []byte("a new secret"), HostConfigObject: b.RegisterHost.HostConfigObject}}}
	case *tlipb.Request_SetAgentInfo, *tlipb.Request_Logout, *tlipb.Request_QueueManagement:
		return ok()
	}
	return &tlipb.Response{Result: tlipb.Result_TIMEOUT, Message: "no answer for this request"}
}

// policyServer is tli's server side in this process, answering with
// answer and writing its key log to keyLog (nil: none).
func policyServer(t *testing.T, keyLog io.Writer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := trace.NewRecorder(io.Discard, trace.Options{Proc: "smps"}).Listen(l, "")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				sc, err := tli.ServerHandshake(ctx, c.(*trace.Conn), tli.ServerConfig{
					Name: serverName, AllowAdmin: true, KeyLog: keyLog,
					Secret: func(h string) ([]byte, bool) { return secret, h == trustedHost },
				})
				if err != nil {
					return
				}
				var req tlipb.Request
				for {
					req.Reset()
					if err := sc.ReadRequest(&req); err != nil {
						return
					}
					if err := sc.WriteResponse(&req, answer(&req)); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// wireFrame is one TLI frame as it crossed the wire, header included.
type wireFrame struct {
	fromClient bool
	b          []byte
}

// session is a recorded connection: its frames in the order they
// completed on the wire, and what the dissector should call each one.
type session struct {
	frames []wireFrame
	want   []string
}

// recorded turns a client's trace (with payloads) into frames, in the
// order each one's last byte was sent or received.
func recorded(t *testing.T, trc []byte) []wireFrame {
	t.Helper()
	var out []wireFrame
	pending := map[bool][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(trc))
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var e trace.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("trace line %q: %v", sc.Text(), err)
		}
		if e.Op != trace.OpSend && e.Op != trace.OpReceive {
			continue
		}
		dir := e.Op == trace.OpSend
		pending[dir] = append(pending[dir], e.Data...)
		for len(pending[dir]) >= tli.HeaderSize {
			n := tli.HeaderSize + int(binary.BigEndian.Uint32(pending[dir]))
			if n > tli.MaxFrame+tli.HeaderSize {
				// An oversized header is a frame of its own: the peer
				// closes on it without reading on.
				n = tli.HeaderSize
			}
			if len(pending[dir]) < n {
				break
			}
			out = append(out, wireFrame{dir, pending[dir][:n:n]})
			pending[dir] = pending[dir][n:]
		}
	}
	for dir, rest := range pending {
		if len(rest) > 0 {
			t.Fatalf("%d bytes of a frame left over (from client: %v)", len(rest), dir)
		}
	}
	return out
}

func clientRecorder() (*trace.Recorder, *lockedBuffer) {
	var b lockedBuffer
	return trace.NewRecorder(&b, trace.Options{Proc: "w3wp.exe", Payload: true}), &b
}

// agentSession runs reqs over an agent session and returns what the
// dissector should show: the handshake, then each request and the
// response, named by tli.Describe and tli.DescribeResponse, which the
// traces use too.
func agentSession(t *testing.T, addr string, admin bool, reqs ...*tlipb.Request) session {
	t.Helper()
	rec, trc := clientRecorder()
	cfg := tli.ClientConfig{TrustedHost: trustedHost, Secret: secret, Recorder: rec}
	hello := "ClientHello trusted host " + trustedHost
	if admin {
		cfg = tli.ClientConfig{Admin: true, Recorder: rec}
		hello = "ClientHello administrator session"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tli.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := session{want: []string{hello, "ServerHello from " + serverName, "ClientConfirm"}}
	for _, req := range reqs {
		resp, err := c.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		s.want = append(s.want, "Request "+tli.Describe(req), "Response "+tli.DescribeResponse(req, resp))
	}
	c.Close()
	s.frames = recorded(t, trc.Bytes())
	if len(s.frames) != len(s.want) {
		t.Fatalf("recorded %d frames for %d expected texts", len(s.frames), len(s.want))
	}
	return s
}

// rawSession sends frames as they are and reads what the server answers
// until it closes.
func rawSession(t *testing.T, addr string, frames ...[]byte) []wireFrame {
	t.Helper()
	rec, trc := clientRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rec.Dial(ctx, nil, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	c.Close()
	return recorded(t, trc.Bytes())
}

func frame(t *testing.T, typ byte, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f, err := tli.AppendFrame(nil, typ, b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func request(body any) *tlipb.Request {
	r := &tlipb.Request{}
	switch b := body.(type) {
	case *tlipb.GetHostConfigRequest:
		r.Body = &tlipb.Request_GetHostConfig{GetHostConfig: b}
	case *tlipb.GetAgentConfigRequest:
		r.Body = &tlipb.Request_GetAgentConfig{GetAgentConfig: b}
	case *tlipb.SetAgentInfoRequest:
		r.Body = &tlipb.Request_SetAgentInfo{SetAgentInfo: b}
	case *tlipb.IsProtectedRequest:
		r.Body = &tlipb.Request_IsProtected{IsProtected: b}
	case *tlipb.LoginRequest:
		r.Body = &tlipb.Request_Login{Login: b}
	case *tlipb.AuthorizeRequest:
		r.Body = &tlipb.Request_Authorize{Authorize: b}
	case *tlipb.LogoutRequest:
		r.Body = &tlipb.Request_Logout{Logout: b}
	case *tlipb.DoManagementRequest:
		r.Body = &tlipb.Request_DoManagement{DoManagement: b}
	case *tlipb.RegisterHostRequest:
		r.Body = &tlipb.Request_RegisterHost{RegisterHost: b}
	case *tlipb.QueueManagementRequest:
		r.Body = &tlipb.Request_QueueManagement{QueueManagement: b}
	default:
		panic("request: unknown body")
	}
	return r
}
