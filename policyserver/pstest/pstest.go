// Package pstest runs a Policy Server inside a test's own process, over
// real loopback TCP, for the packages whose tests need one to talk to
// (bootstrap, hla, ...): one helper instead of a copy in each.
package pstest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/policyserver"
)

// Server is a running Policy Server with the seed store.
type Server struct {
	Addr  string // 127.0.0.1:port
	Port  int
	Store *policyserver.Store
	// Secret is the shared secret of the trusted host Start registered.
	Secret []byte

	stop func()
}

// Start serves the seed store on a free loopback port until the test ends.
// With trustedHost set it registers that host for hco.smps1, as smreghost
// would, with secret (nil: one the store generates).
func Start(tb testing.TB, trustedHost string, secret []byte) *Server {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return StartOn(tb, l, "smps1.shared.lab", trustedHost, secret)
}

// StartOn is Start on a listener of the test's (ListenSeedPort), as the
// Policy Server called name; it closes l when the test ends.
func StartOn(tb testing.TB, l net.Listener, name, trustedHost string, secret []byte) *Server {
	tb.Helper()
	st, err := policyserver.SeedStore()
	if err != nil {
		tb.Fatalf("SeedStore: %v", err)
	}
	s := &Server{Store: st}
	if trustedHost != "" {
		th, err := st.RegisterHost(tb.Context(), trustedHost, "hco.smps1", true, secret)
		if err != nil {
			tb.Fatalf("RegisterHost: %v", err)
		}
		s.Secret = th.Secret
	}
	srv, err := policyserver.New(policyserver.Config{Name: name, Store: st, Log: zerolog.Nop()})
	if err != nil {
		l.Close()
		tb.Fatalf("policyserver.New: %v", err)
	}
	s.Addr, s.Port = l.Addr().String(), l.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				tb.Errorf("Serve has not returned 10 s after the cancel")
			}
		})
	}
	tb.Cleanup(s.stop)
	return s
}

// Stop stops the server now (a test of a Policy Server that goes away);
// it is also done when the test ends.
func (s *Server) Stop() { s.stop() }

// SeedPort is the port of the seed store's HCO servers (smps1.shared.lab:44443).
const SeedPort = 44443

// ListenSeedPort listens on SeedPort at a loopback address of the test's
// own, 127.X.Y.21, so that an agent whose hosts map names it
// smps1.shared.lab reaches it through the seed HCO; base is "127.X.Y.",
// for the test's other hosts. Tests run in parallel and never take the
// lab's fixed addresses.
func ListenSeedPort(tb testing.TB) (l net.Listener, base string) {
	tb.Helper()
	for try := 0; ; try++ {
		base = fmt.Sprintf("127.%d.%d.", 100+rand.IntN(100), 1+rand.IntN(250))
		l, err := net.Listen("tcp", net.JoinHostPort(base+"21", strconv.Itoa(SeedPort)))
		if err == nil {
			return l, base
		}
		if try == 10 {
			tb.Fatalf("no loopback address of its own for port %d: %v", SeedPort, err)
		}
	}
}
