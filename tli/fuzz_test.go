package tli

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

func FuzzServerHandshake(f *testing.F) {
	agent := newHello()
	agent.Proof = clientProof(secret, agent)
	ab, _ := proto.Marshal(agent)
	priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
	admin := &tlipb.ClientHello{Version: Version, Mode: tlipb.Mode_MODE_ADMIN, ClientNonce: make([]byte, 16), EcdhPublic: priv.PublicKey().Bytes()}
	adm, _ := proto.Marshal(admin)
	good := mustFrame(FrameClientHello, ab)
	for _, seed := range [][]byte{
		good,
		mustFrame(FrameClientHello, adm),
		append(good, mustFrame(FrameClientConfirm, make([]byte, 48))...),
		append(good, mustFrame(FrameRequest, nil)...),
		append(good, header(MaxFrame+1, FrameClientConfirm)...),
		header(MaxFrame+1, FrameClientHello),
		header(MaxFrame, FrameClientHello),
		good[:len(good)-3],
		good[:3],
		mustFrame(FrameClientHello, nil),
		mustFrame(FrameServerHello, ab),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		nil,
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	rec := trace.NewRecorder(io.Discard, trace.Options{Proc: "smps", Payload: true})
	f.Fuzz(func(t *testing.T, data []byte, closeAfter bool) {
		server, client := net.Pipe()
		var wg sync.WaitGroup
		wg.Go(func() {
			client.Write(data)
			if closeAfter {
				client.Close()
			}
		})
		wg.Go(func() { io.Copy(io.Discard, client) })
		defer func() {
			server.Close()
			client.Close()
			wg.Wait()
		}()

		cfg := serverConfig()
		// Short, so that the inputs that end in silence (a truncated
		// frame, no confirm) still run hundreds of times a second.
		cfg.HandshakeTimeout = 2 * time.Millisecond
		cfg.AllowAdmin = true
		tc := rec.Server(server, "")
		type result struct {
			sc  *ServerConn
			err error
		}
		done := make(chan result, 1)
		go func() {
			sc, err := ServerHandshake(context.Background(), tc, cfg)
			done <- result{sc, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServerHandshake hangs")
		}
		if (r.sc == nil) == (r.err == nil) {
			t.Fatalf("ServerHandshake returned %v and %v", r.sc, r.err)
		}
		if r.err != nil {
			var he *HandshakeError
			if !errors.As(r.err, &he) || he.Code < CodeNoClientHello || he.Code > CodeBadEncryption {
				t.Fatalf("error %v is not a handshake error with a vendor code", r.err)
			}
		}
	})
}
