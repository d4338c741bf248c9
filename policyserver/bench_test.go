package policyserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

// benchServer runs a Policy Server on loopback without tracing or logging,
// so that the figures are the protocol's, not the recorder's.
func benchServer(b *testing.B) (addr string, secret []byte) {
	b.Helper()
	st, err := SeedStore()
	if err != nil {
		b.Fatal(err)
	}
	th, err := st.RegisterHost("trust_bench", "hco.smps1", true, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(Config{Name: "smps-bench", Store: st, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, l); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return l.Addr().String(), th.Secret
}

func isProtectedRequest() *tlipb.Request {
	return &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{
		AgentName: "wa1", Resource: "/protected/index.html", Action: "GET"}}}
}

// frameSizes measures one IsProtected exchange on the wire, so that the raw
// TCP baseline moves exactly as many bytes each way.
func frameSizes(b *testing.B, c *tli.Client) (req, resp int) {
	resp1, err := c.Do(context.Background(), isProtectedRequest())
	if err != nil {
		b.Fatal(err)
	}
	const gcmOverhead = 16
	r := isProtectedRequest()
	r.Id = resp1.Id
	req = tli.HeaderSize + proto.Size(r) + gcmOverhead
	resp = tli.HeaderSize + proto.Size(resp1) + gcmOverhead
	return req, resp
}

func benchRaw(reqSize, respSize int) func(*testing.B) {
	return func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			in, out := make([]byte, reqSize), make([]byte, respSize)
			for {
				if _, err := io.ReadFull(c, in); err != nil {
					return
				}
				if _, err := c.Write(out); err != nil {
					return
				}
			}
		}()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		out, in := make([]byte, reqSize), make([]byte, respSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(out); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, in); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func benchIsProtected(addr string, secret []byte) func(*testing.B) {
	return func(b *testing.B) {
		c, err := tli.Dial(context.Background(), addr, tli.ClientConfig{TrustedHost: "trust_bench", Secret: secret})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			resp, err := c.Do(ctx, isProtectedRequest())
			if err != nil {
				b.Fatal(err)
			}
			if resp.Result != tlipb.Result_YES {
				b.Fatalf("IsProtected: %v %s", resp.Result, resp.Message)
			}
		}
	}
}

func benchHandshake(addr string, secret []byte) func(*testing.B) {
	return func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			c, err := tli.Dial(ctx, addr, tli.ClientConfig{TrustedHost: "trust_bench", Secret: secret})
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	}
}

// BenchmarkTLI compares, in one process and one run, (a) a raw TCP
// ping-pong moving the same bytes as an IsProtected exchange, (b) an
// IsProtected round trip over an established TLI session to a real Policy
// Server, (c) a full connect + handshake. The ratios are the figures that
// matter: targets are (b)/(a) <= 1.3 and (c)/(a) <= 10.
func BenchmarkTLI(b *testing.B) {
	addr, secret := benchServer(b)
	c, err := tli.Dial(context.Background(), addr, tli.ClientConfig{TrustedHost: "trust_bench", Secret: secret})
	if err != nil {
		b.Fatal(err)
	}
	reqSize, respSize := frameSizes(b, c)
	c.Close()

	b.Run("raw", benchRaw(reqSize, respSize))
	b.Run("isprotected", benchIsProtected(addr, secret))
	b.Run("handshake", benchHandshake(addr, secret))
}

// BenchmarkTLIRatios runs the three benchmarks of BenchmarkTLI back to back
// and reports their ratios as metrics, interleaving rounds so that a noisy
// neighbour on a small machine hits all three alike.
func BenchmarkTLIRatios(b *testing.B) {
	addr, secret := benchServer(b)
	c, err := tli.Dial(context.Background(), addr, tli.ClientConfig{TrustedHost: "trust_bench", Secret: secret})
	if err != nil {
		b.Fatal(err)
	}
	reqSize, respSize := frameSizes(b, c)
	c.Close()
	const rounds = 3
	var raw, isp, hs float64
	for i := 0; i < rounds; i++ {
		raw += float64(testing.Benchmark(benchRaw(reqSize, respSize)).NsPerOp())
		isp += float64(testing.Benchmark(benchIsProtected(addr, secret)).NsPerOp())
		hs += float64(testing.Benchmark(benchHandshake(addr, secret)).NsPerOp())
	}
	raw, isp, hs = raw/rounds, isp/rounds, hs/rounds
	b.ReportMetric(raw, "raw-ns/op")
	b.ReportMetric(isp, "isprotected-ns/op")
	b.ReportMetric(hs, "handshake-ns/op")
	b.ReportMetric(isp/raw, "isprotected/raw")
	b.ReportMetric(hs/raw, "handshake/raw")
	b.Log(fmt.Sprintf("payload %d bytes out, %d back; raw %.0f ns, IsProtected %.0f ns (%.2fx), handshake %.0f ns (%.2fx)",
		reqSize, respSize, raw, isp, isp/raw, hs, hs/raw))
	for i := 0; i < b.N; i++ {
	}
}
