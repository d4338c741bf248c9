package policyserver

import (
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/agentlab/agentlab/proto/tlipb"
)

func cmd(t *testing.T, code int, arg string) ManagementCommand {
	t.Helper()
	c, err := NewManagementCommand(code, arg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewManagementCommand(t *testing.T) {
	for code, name := range map[int]string{
		189: "AFFILIATE_KEY", 190: "AGENT_KEY_NEXT", 191: "AGENT_KEY_LAST", 192: "AGENT_KEY_CURRENT",
		193: "AGENT_KEY_PERSISTENT", 194: "FLUSH_ALL", 195: "FLUSH_ALL_USERS", 197: "FLUSH_ALL_REALMS",
	} {
		if c := cmd(t, code, ""); c.Name != name || c.Code != code || CommandName(code) != name {
			t.Errorf("%d: %+v", code, c)
		}
	}
	if c := cmd(t, int(tlipb.ManagementCode_FLUSH_USER), "dir1/uid=user1,ou=People,dc=shared,dc=lab"); c.Name != "FLUSH_USER" || c.Arg == "" {
		t.Errorf("flush user: %+v", c)
	}
	for _, code := range []int{0, 188, 199, -194} {
		if _, err := NewManagementCommand(code, ""); !errors.Is(err, ErrUnknownCommand) {
			t.Errorf("code %d: %v", code, err)
		}
	}
	for _, code := range []int{int(tlipb.ManagementCode_FLUSH_USER), int(tlipb.ManagementCode_FLUSH_REALM)} {
		if _, err := NewManagementCommand(code, ""); err == nil {
			t.Errorf("code %d without its argument was accepted", code)
		}
	}
}

func TestManagementQueue(t *testing.T) {
	q := NewManagementQueue([]string{"wa1", "wa2"}, 3)
	flushAll, flushUsers, flushRealms, flushRealm := cmd(t, 194, ""), cmd(t, 195, ""), cmd(t, 197, ""), cmd(t, 198, "realm.protected")

	// Order is kept.
	q.Enqueue("wa1", flushAll)
	q.Enqueue("wa1", flushUsers)
	if got := q.Drain("wa1"); !reflect.DeepEqual(got, []ManagementCommand{flushAll, flushUsers}) {
		t.Errorf("drain = %v", got)
	}
	if got := q.Drain("wa1"); got != nil {
		t.Errorf("second drain = %v", got)
	}

	// "" reaches every agent.
	if err := q.Enqueue("", flushRealms); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"wa1", "wa2"} {
		if got := q.Drain(a); !reflect.DeepEqual(got, []ManagementCommand{flushRealms}) {
			t.Errorf("%s: drain = %v", a, got)
		}
	}

	// Overflow drops the oldest and counts it.
	for _, c := range []ManagementCommand{flushAll, flushUsers, flushRealms, flushRealm, flushAll} {
		q.Enqueue("wa2", c)
	}
	if q.Len("wa2") != 3 || q.Dropped("wa2") != 2 {
		t.Errorf("len %d dropped %d", q.Len("wa2"), q.Dropped("wa2"))
	}
	if got := q.Drain("wa2"); !reflect.DeepEqual(got, []ManagementCommand{flushRealms, flushRealm, flushAll}) {
		t.Errorf("after overflow: %v", got)
	}
	if q.Len("wa1") != 0 || q.Dropped("wa1") != 0 {
		t.Error("wa1 affected by wa2's overflow")
	}
	// After a drain the ring starts again from the front.
	q.Enqueue("wa2", flushUsers)
	if got := q.Drain("wa2"); !reflect.DeepEqual(got, []ManagementCommand{flushUsers}) {
		t.Errorf("after refill: %v", got)
	}

	if err := q.Enqueue("wa9", flushAll); !errors.Is(err, ErrUnknownAgent) {
		t.Errorf("unknown agent: %v", err)
	}
	if q.Drain("wa9") != nil {
		t.Error("unknown agent has commands")
	}
	if err := q.Enqueue("wa1", ManagementCommand{Code: 42}); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("unknown code: %v", err)
	}
	// A command built by hand gets its name.
	q.Enqueue("wa1", ManagementCommand{Code: int(tlipb.ManagementCode_FLUSH_ALL)})
	if got := q.Drain("wa1"); len(got) != 1 || got[0].Name != "FLUSH_ALL" {
		t.Errorf("named: %v", got)
	}
}

func TestManagementQueueConcurrent(t *testing.T) {
	s := seedStore(t)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	got := 0
	var mu sync.Mutex
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				s.Enqueue("wa1", ManagementCommand{Code: int(tlipb.ManagementCode_FLUSH_USER), Arg: string(rune('a'+w)) + string(rune(i))})
			}
		}()
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
				n := len(s.Drain("wa1"))
				mu.Lock()
				got += n
				mu.Unlock()
			}
		}
	}()
	wg.Wait()
	close(done)
	<-stopped
	mu.Lock()
	got += len(s.Drain("wa1"))
	total := got + int(s.Management().Dropped("wa1"))
	mu.Unlock()
	if total != writers*each {
		t.Errorf("drained+dropped = %d, want %d", total, writers*each)
	}
}
