package ipc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/testsupport"
)

func TestForwarderBuffersWhileAwayThenStreams(t *testing.T) {
	f := ipc.NewLogForwarder(3)
	log := zerolog.New(f).With().Timestamp().Str("proc", "w3wp.exe").Int("pid", 1972).Int("tid", 2856).Str("role", "hla").Logger()
	for i := range 5 {
		log.Info().Int("i", i).Msgf("record %d", i)
	}
	if st := f.Stats(); st.Queued != 3 || st.Dropped != 2 || st.Sent != 0 {
		t.Fatalf("while away: %+v, want 3 queued and 2 dropped", st)
	}
	f.SetWorker(7)

	llawp := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Forward(ctx, llawp) }()
	testsupport.WaitFor(t, 10*time.Second, "the queued records", func() bool { return len(llawp.got()) == 4 })
	log.Warn().Msg("while connected")
	testsupport.WaitFor(t, 10*time.Second, "the live record", func() bool { return len(llawp.got()) == 5 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Forward after cancel: %v", err)
	}

	got := llawp.got()
	if !strings.Contains(got[0].Message, "2 log records dropped") || got[0].Level != "warn" || got[0].Proc != "w3wp.exe" {
		t.Errorf("first record should report the drops: %+v", got[0])
	}
	for i, r := range got[1:4] {
		want := fmt.Sprintf("record %d", i)
		if r.Message != want || r.PID != 1972 || r.TID != 2856 || r.Proc != "w3wp.exe" || r.Role != "hla" || r.Level != "info" || r.Worker != 7 {
			t.Errorf("record %d: %+v, want %q from pid 1972 worker 7", i, r, want)
		}
		if string(r.Fields) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Errorf("record %d fields %s", i, r.Fields)
		}
		if r.Time.IsZero() {
			t.Errorf("record %d has no time", i)
		}
	}
	if got[4].Message != "while connected" || got[4].Level != "warn" {
		t.Errorf("live record %+v", got[4])
	}
	if st := f.Stats(); st.Queued != 0 || st.Sent != 5 || st.Dropped != 2 {
		t.Errorf("after forwarding: %+v", st)
	}
}

// brokenLLAWP accepts ok records on its Log stream, then fails.
type brokenLLAWP struct {
	*fake
	ok int
}

func (b *brokenLLAWP) Log(ctx context.Context) (ipc.LogSender, error) {
	return &brokenLog{fakeLog: fakeLog{f: b.fake}, ok: b.ok}, nil
}

type brokenLog struct {
	fakeLog
	ok int
}

func (b *brokenLog) Send(r ipc.LogRecord) error {
	if b.ok == 0 {
		return errors.New("LLAWP gone")
	}
	b.ok--
	return b.fakeLog.Send(r)
}

func TestForwarderKeepsUnsentRecords(t *testing.T) {
	f := ipc.NewLogForwarder(10)
	for i := range 4 {
		f.Add(ipc.LogRecord{Message: fmt.Sprint(i)})
	}
	b := &brokenLLAWP{fake: newFake(), ok: 1}
	if err := f.Forward(context.Background(), b); err == nil || !strings.Contains(err.Error(), "LLAWP gone") {
		t.Fatalf("Forward on a broken stream: %v", err)
	}
	if st := f.Stats(); st.Queued != 3 || st.Sent != 1 {
		t.Fatalf("after the break: %+v, want 3 queued, 1 sent", st)
	}

	// The next LLAWP gets the rest, in order.
	llawp := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Forward(ctx, llawp) }()
	testsupport.WaitFor(t, 10*time.Second, "the kept records", func() bool { return len(llawp.got()) == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, r := range llawp.got() {
		if r.Message != fmt.Sprint(i+1) {
			t.Errorf("record %d is %q", i, r.Message)
		}
	}
}

func TestForwarderOneAtATime(t *testing.T) {
	f := ipc.NewLogForwarder(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	llawp := newFake()
	go func() { done <- f.Forward(ctx, llawp) }()
	f.Add(ipc.LogRecord{Message: "x"})
	testsupport.WaitFor(t, 10*time.Second, "the first Forward to run", func() bool { return len(llawp.got()) == 1 })
	if err := f.Forward(ctx, newFake()); err == nil {
		t.Error("a second Forward ran beside the first")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestForwarderTakesNonJSON(t *testing.T) {
	f := ipc.NewLogForwarder(0)
	f.Write([]byte("not json\n"))
	llawp := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Forward(ctx, llawp) }()
	testsupport.WaitFor(t, 10*time.Second, "the record", func() bool { return len(llawp.got()) == 1 })
	cancel()
	<-done
	if r := llawp.got()[0]; r.Message != "not json" || r.PID == 0 {
		t.Errorf("%+v", r)
	}
}
