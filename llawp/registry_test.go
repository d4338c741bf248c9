package llawp

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
)

func TestRegistryFanOut(t *testing.T) {
	r := NewRegistry(RegistryOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chans []<-chan ipc.ManagementEvent
	for _, name := range []string{"w3wp.exe", "httpd", "httpd"} {
		id := r.Register(ipc.Worker{PID: 100 + len(chans), Name: name, Role: "hla"})
		ch, err := r.Watch(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	events := []ipc.ManagementEvent{
		{Code: uint32(tlipb.ManagementCode_FLUSH_ALL)},
		{Code: uint32(tlipb.ManagementCode_FLUSH_USER), Arg: "dir1/uid=user1,ou=People,dc=shared,dc=lab"},
		{Code: uint32(tlipb.ManagementCode_FLUSH_REALM), Name: "FLUSH_REALM", Arg: "protected"},
	}
	for _, ev := range events {
		if delivered, dropped := r.Publish(ev); delivered != 3 || dropped != 0 {
			t.Fatalf("Publish: %d delivered, %d dropped; want 3, 0", delivered, dropped)
		}
	}
	for i, ch := range chans {
		for j, want := range events {
			got := <-ch
			wantName := want.Name
			if wantName == "" {
				wantName = ipc.EventName(want.Code)
			}
			if got.Seq != uint64(j+1) || got.Code != want.Code || got.Name != wantName || got.Arg != want.Arg || got.Missed != 0 {
				t.Errorf("watcher %d event %d: %+v, want %+v named %s", i, j, got, want, wantName)
			}
		}
	}
}

func TestRegistrySlowWatcherDoesNotBlock(t *testing.T) {
	r := NewRegistry(RegistryOptions{WatchQueue: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fast1, fast2, slow := r.Register(ipc.Worker{PID: 1}), r.Register(ipc.Worker{PID: 2}), r.Register(ipc.Worker{PID: 3})
	slowCh, err := r.Watch(ctx, slow)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	got := make([][]uint64, 2)
	for i, id := range []ipc.WorkerID{fast1, fast2} {
		ch, err := r.Watch(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for ev := range ch {
				got[i] = append(got[i], ev.Seq)
				if len(got[i]) == n {
					return
				}
			}
		})
	}
	// The fast watchers read as they go; publishing waits for them so that
	// only the slow one (which never reads) can run out of room.
	for range n {
		r.Publish(ipc.ManagementEvent{Code: uint32(tlipb.ManagementCode_FLUSH_ALL)})
		testsupport.WaitFor(t, 10*time.Second, "the fast watchers", func() bool {
			return r.queued(fast1) == 0 && r.queued(fast2) == 0
		})
	}
	wg.Wait()
	for i, seqs := range got {
		if len(seqs) != n || seqs[0] != 1 || seqs[n-1] != n {
			t.Errorf("fast watcher %d got %d events (%v...)", i, len(seqs), seqs[:min(3, len(seqs))])
		}
	}
	var dropped uint64
	for _, w := range r.Workers() {
		if w.ID == slow {
			dropped = w.EventsDropped
		} else if w.EventsDropped != 0 {
			t.Errorf("fast worker %d dropped %d", w.ID, w.EventsDropped)
		}
	}
	if dropped != n-2 {
		t.Errorf("slow worker dropped %d, want %d", dropped, n-2)
	}
	// The slow one has the first two; the next event it gets says how many
	// it missed, so that it can flush to be safe.
	if a, b := <-slowCh, <-slowCh; a.Seq != 1 || b.Seq != 2 {
		t.Errorf("slow watcher kept %d and %d, want 1 and 2", a.Seq, b.Seq)
	}
	r.Publish(ipc.ManagementEvent{Code: uint32(tlipb.ManagementCode_FLUSH_ALL)})
	if ev := <-slowCh; ev.Missed != n-2 || ev.Seq != n+1 {
		t.Errorf("next event for the slow watcher: %+v, want missed %d", ev, n-2)
	}
}

func TestRegistryWatchEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(r *Registry, id ipc.WorkerID, cancel context.CancelFunc)
	}{
		{"unregister", func(r *Registry, id ipc.WorkerID, _ context.CancelFunc) { r.Unregister(id) }},
		{"cancel", func(_ *Registry, _ ipc.WorkerID, cancel context.CancelFunc) { cancel() }},
		{"close", func(r *Registry, _ ipc.WorkerID, _ context.CancelFunc) { r.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry(RegistryOptions{})
			id := r.Register(ipc.Worker{PID: 1})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := r.Watch(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			tt.end(r, id, cancel)
			for range ch {
			}
			// Publishing after the end must not panic on a closed channel.
			r.Publish(ipc.ManagementEvent{Code: uint32(tlipb.ManagementCode_FLUSH_ALL)})
		})
	}
}

func TestRegistryUnknownWorker(t *testing.T) {
	r := NewRegistry(RegistryOptions{})
	if _, err := r.Unregister(7); !errors.Is(err, ipc.ErrUnknownWorker) {
		t.Errorf("Unregister: %v", err)
	}
	if _, err := r.Watch(context.Background(), 7); !errors.Is(err, ipc.ErrUnknownWorker) {
		t.Errorf("Watch: %v", err)
	}
	id := r.Register(ipc.Worker{PID: 1})
	r.Unregister(id)
	if _, err := r.Unregister(id); !errors.Is(err, ipc.ErrUnknownWorker) {
		t.Errorf("second Unregister: %v", err)
	}
	if id2 := r.Register(ipc.Worker{PID: 1}); id2 == id {
		t.Error("a worker id was reused")
	}
}

func TestRegistryCountsAndLogs(t *testing.T) {
	var counts []int
	r := NewRegistry(RegistryOptions{OnCount: func(n int) { counts = append(counts, n) }})
	a := r.Register(ipc.Worker{PID: 10, Name: "w3wp.exe"})
	b := r.Register(ipc.Worker{PID: 11, Name: "w3wp.exe"})
	r.CountLog(a, 10)
	r.CountLog(0, 11) // before Register gave it an id: found by pid
	r.CountLog(0, 99) // nobody's
	ws := r.Workers()
	if len(ws) != 2 || ws[0].ID != a || ws[0].LogRecords != 1 || ws[1].ID != b || ws[1].LogRecords != 1 {
		t.Errorf("workers %+v", ws)
	}
	r.Unregister(a)
	r.Unregister(b)
	if want := []int{1, 2, 1, 0}; !slices.Equal(counts, want) {
		t.Errorf("OnCount saw %v, want %v", counts, want)
	}
}

func TestRegistryReport(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	r := NewRegistry(RegistryOptions{Now: func() time.Time { return now }})
	a := r.Register(ipc.Worker{PID: 10, Name: "httpd"})
	b := r.Register(ipc.Worker{PID: 11, Name: "httpd"})
	first := []ipc.ServerSockets{{Addr: "smps1.shared.lab:44443", State: "Active", Open: 2, Opened: 2}}
	second := []ipc.ServerSockets{{Addr: "smps1.shared.lab:44443", State: "Active", Open: 4, Busy: 3, Opened: 5, Requests: 9}}
	tests := []struct {
		name    string
		id      ipc.WorkerID
		servers []ipc.ServerSockets
		wantErr bool
		want    map[ipc.WorkerID][]ipc.ServerSockets
	}{
		{"first report", a, first, false, map[ipc.WorkerID][]ipc.ServerSockets{a: first, b: nil}},
		{"a later report replaces it", a, second, false, map[ipc.WorkerID][]ipc.ServerSockets{a: second, b: nil}},
		{"each worker its own", b, first, false, map[ipc.WorkerID][]ipc.ServerSockets{a: second, b: first}},
		{"unknown worker", 99, first, true, map[ipc.WorkerID][]ipc.ServerSockets{a: second, b: first}},
	}
	for _, tt := range tests {
		err := r.Report(tt.id, tt.servers)
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ipc.ErrUnknownWorker)) {
			t.Errorf("%s: Report: %v", tt.name, err)
		}
		for _, w := range r.Workers() {
			if !slices.Equal(w.Servers, tt.want[w.ID]) {
				t.Errorf("%s: worker %d shows %+v, want %+v", tt.name, w.ID, w.Servers, tt.want[w.ID])
			}
			if (w.Servers != nil) != !w.Reported.IsZero() {
				t.Errorf("%s: worker %d reported at %v with sockets %v", tt.name, w.ID, w.Reported, w.Servers)
			}
		}
	}
}

// queued is how many events wait in worker id's watch queues.
func (r *Registry) queued(id ipc.WorkerID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	if w := r.workers[id]; w != nil {
		for _, s := range w.watchers {
			n += len(s.ch)
		}
	}
	return n
}
