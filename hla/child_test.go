package hla

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/agentlab/agentlab/ipc"
)

// TestAttachLinkWedgedLLAWP: an LLAWP that accepts and never answers (a
// stopped process) must not hold the link's lock while it is dialled: a
// new reattach config from the parent and a Status both get through, and
// the dial ends with its context.
func TestAttachLinkWedgedLLAWP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	defer func() {
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	}()
	cfg, _ := json.Marshal(ipc.Reattach{Protocol: string(plugin.ProtocolGRPC), ProtocolVersion: int(ipc.Handshake.ProtocolVersion),
		Network: "tcp", Addr: l.Addr().String(), PID: 1})

	a := newAttachLink(ProcessConfig{})
	a.setReattach(string(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	dialled := make(chan error, 1)
	go func() {
		_, err := a.attached(ctx)
		dialled <- err
	}()
	<-accepted // the dial is under way, and stuck

	// Both go through while the dial is stuck; with the lock held they
	// would wait for it, and it waits for cancel below.
	through := make(chan error, 1)
	go func() {
		a.setReattach(string(cfg) + " ")
		sctx, scancel := context.WithCancel(context.Background())
		scancel()
		_, err := a.status(sctx)
		through <- err
	}()
	select {
	case err := <-through:
		if err == nil {
			t.Error("Status answered from an LLAWP that never answers")
		}
	case <-time.After(10 * time.Second):
		// Not a speed limit: the stuck dial ends only at cancel, so a
		// lock held across it never lets these through.
		t.Fatal("a new reattach config and Status wait for the stuck dial")
	}
	select {
	case err := <-dialled:
		t.Fatalf("the dial ended before its context: %v", err)
	default:
	}
	cancel()
	if err := <-dialled; err == nil {
		t.Error("attached to an LLAWP that never answered")
	}
	a.close()
}
