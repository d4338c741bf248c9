package ipc_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/proto/tlipb"
)

// helperEnv re-runs this test binary as a helper process, the way
// go-plugin's own tests do: "plugin" serves a fake LLAWP, "owner" launches
// one and waits to be killed.
const helperEnv = "AGENTLAB_IPC_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "plugin":
		os.Exit(servePlugin())
	case "owner":
		os.Exit(runOwner())
	}
	goleak.VerifyTestMain(m)
}

// helperArgs keep a helper from running any test should the switch above
// ever miss.
var helperArgs = []string{"-test.run=^$"}

func servePlugin() int {
	// The real stderr, taken before plugin.Serve swaps os.Stderr.
	log := zerolog.New(ipc.PluginStderr(os.Stderr)).With().Timestamp().Int("pid", os.Getpid()).Logger()
	log.Warn().Str("probe", "stderr").Msg("fake llawp up")
	err := ipc.NewServer(newFake(), log).Serve()
	if err != nil && err != ipc.ErrOwnerShutdown {
		fmt.Fprintln(os.Stderr, "fake llawp:", err)
		return 1
	}
	return 0
}

func runOwner() int {
	o, err := ipc.Launch(context.Background(), ipc.LaunchConfig{
		Path: os.Args[0], Args: helperArgs, Env: []string{helperEnv + "=plugin"},
		Logger: zerolog.New(os.Stderr), SocketDir: os.Getenv("SOCKET_DIR"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "owner:", err)
		return 1
	}
	fmt.Printf("llawp pid %d\n", o.PID())
	// Wait to be SIGKILLed: the test checks that the LLAWP does not
	// outlive its owner.
	select {}
}

// fake is an LLAWP backend: it answers every Watch with one FLUSH_ALL and
// counts the log records of each worker.
type fake struct {
	mu      sync.Mutex
	next    ipc.WorkerID
	workers map[ipc.WorkerID]*ipc.WorkerStatus
	order   []ipc.WorkerID
	records []ipc.LogRecord
}

func newFake() *fake { return &fake{workers: map[ipc.WorkerID]*ipc.WorkerStatus{}} }

func (f *fake) Register(_ context.Context, w ipc.Worker) (ipc.WorkerID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.workers[f.next] = &ipc.WorkerStatus{ID: f.next, Worker: w, Registered: time.Now()}
	f.order = append(f.order, f.next)
	return f.next, nil
}

func (f *fake) Unregister(_ context.Context, id ipc.WorkerID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.workers[id] == nil {
		return ipc.ErrUnknownWorker
	}
	delete(f.workers, id)
	return nil
}

func (f *fake) Log(context.Context) (ipc.LogSender, error) { return &fakeLog{f: f}, nil }

type fakeLog struct {
	f *fake
	n uint64
}

func (l *fakeLog) Send(r ipc.LogRecord) error {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	l.n++
	l.f.records = append(l.f.records, r)
	if w := l.f.workers[r.Worker]; w != nil {
		w.LogRecords++
	}
	return nil
}

func (l *fakeLog) CloseAndSummary() (ipc.LogSummary, error) {
	return ipc.LogSummary{Received: l.n}, nil
}

func (f *fake) Watch(ctx context.Context, id ipc.WorkerID) (<-chan ipc.ManagementEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.workers[id] == nil {
		return nil, ipc.ErrUnknownWorker
	}
	ch := make(chan ipc.ManagementEvent, 1)
	ch <- ipc.ManagementEvent{Seq: 1, Code: uint32(tlipb.ManagementCode_FLUSH_ALL), Name: "FLUSH_ALL", Time: time.Now()}
	context.AfterFunc(ctx, func() { close(ch) })
	return ch, nil
}

func (f *fake) Status(context.Context) (ipc.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := ipc.Status{PID: os.Getpid(), Phase: "ready"}
	for _, id := range f.order {
		if w := f.workers[id]; w != nil {
			st.Workers = append(st.Workers, *w)
		}
	}
	return st, nil
}

func (f *fake) Report(_ context.Context, id ipc.WorkerID, servers []ipc.ServerSockets) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.workers[id]
	if w == nil {
		return ipc.ErrUnknownWorker
	}
	w.Servers, w.Reported = servers, time.Now()
	return nil
}

func (f *fake) got() []ipc.LogRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ipc.LogRecord(nil), f.records...)
}
