package hla

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lruOp is one step of a table test: add, get, remove, removeIf (drops
// values equal to val), purge or advance the clock.
type lruOp struct {
	op   string
	key  string
	val  int
	ttl  time.Duration
	want bool // get, remove: found
	n    int  // removeIf, purge: how many went
}

func TestLRU(t *testing.T) {
	const ttl = time.Minute
	tests := []struct {
		name     string
		max      int
		ops      []lruOp
		wantKeys []string // what is left, most recent first
	}{
		{
			name:     "add then get",
			max:      2,
			ops:      []lruOp{{op: "add", key: "a", val: 1, ttl: ttl}, {op: "get", key: "a", val: 1, want: true}, {op: "get", key: "b"}},
			wantKeys: []string{"a"},
		},
		{
			name: "the least recently used goes first",
			max:  2,
			ops: []lruOp{
				{op: "add", key: "a", val: 1, ttl: ttl}, {op: "add", key: "b", val: 2, ttl: ttl},
				{op: "get", key: "a", val: 1, want: true}, // a is now newer than b
				{op: "add", key: "c", val: 3, ttl: ttl},
				{op: "get", key: "b"},
			},
			wantKeys: []string{"c", "a"},
		},
		{
			name: "adding an existing key replaces it and refreshes it",
			max:  2,
			ops: []lruOp{
				{op: "add", key: "a", val: 1, ttl: ttl}, {op: "add", key: "b", val: 2, ttl: ttl},
				{op: "add", key: "a", val: 10, ttl: ttl}, {op: "add", key: "c", val: 3, ttl: ttl},
				{op: "get", key: "a", val: 10, want: true},
			},
			wantKeys: []string{"a", "c"},
		},
		{
			name: "an entry expires at its ttl, not before",
			max:  2,
			ops: []lruOp{
				{op: "add", key: "a", val: 1, ttl: ttl},
				{op: "advance", ttl: ttl - time.Second}, {op: "get", key: "a", val: 1, want: true},
				{op: "advance", ttl: time.Second}, {op: "get", key: "a"},
			},
			wantKeys: []string{},
		},
		{
			name: "each entry has its own ttl",
			max:  3,
			ops: []lruOp{
				{op: "add", key: "short", val: 1, ttl: time.Second}, {op: "add", key: "long", val: 2, ttl: time.Hour},
				{op: "advance", ttl: time.Minute},
				{op: "get", key: "short"}, {op: "get", key: "long", val: 2, want: true},
			},
			wantKeys: []string{"long"},
		},
		{
			name:     "a ttl that is not positive stores nothing",
			max:      2,
			ops:      []lruOp{{op: "add", key: "a", val: 1, ttl: 0}, {op: "add", key: "b", val: 1, ttl: -time.Second}, {op: "get", key: "a"}},
			wantKeys: []string{},
		},
		{
			name:     "size 0 is off",
			max:      0,
			ops:      []lruOp{{op: "add", key: "a", val: 1, ttl: ttl}, {op: "get", key: "a"}, {op: "remove", key: "a"}, {op: "purge", n: 0}},
			wantKeys: []string{},
		},
		{
			name: "remove",
			max:  3,
			ops: []lruOp{
				{op: "add", key: "a", val: 1, ttl: ttl}, {op: "add", key: "b", val: 2, ttl: ttl},
				{op: "remove", key: "a", want: true}, {op: "remove", key: "a"}, {op: "get", key: "a"},
			},
			wantKeys: []string{"b"},
		},
		{
			name: "remove by value",
			max:  4,
			ops: []lruOp{
				{op: "add", key: "a", val: 1, ttl: ttl}, {op: "add", key: "b", val: 2, ttl: ttl},
				{op: "add", key: "c", val: 1, ttl: ttl}, {op: "add", key: "d", val: 3, ttl: ttl},
				{op: "removeIf", val: 1, n: 2}, {op: "removeIf", val: 7, n: 0},
			},
			wantKeys: []string{"d", "b"},
		},
		{
			name: "purge",
			max:  3,
			ops: []lruOp{
				{op: "add", key: "a", val: 1, ttl: ttl}, {op: "add", key: "b", val: 2, ttl: ttl},
				{op: "purge", n: 2}, {op: "get", key: "a"}, {op: "add", key: "c", val: 3, ttl: ttl},
			},
			wantKeys: []string{"c"},
		},
	}
	for _, tt := range tests {
		// In a synctest bubble the cache reads the bubble's clock
		// (time.Now), and advancing is sleeping: virtual time, no wait.
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newLRU[string, int](tt.max, nil)
				for i, op := range tt.ops {
					switch op.op {
					case "add":
						c.Add(op.key, op.val, op.ttl)
					case "get":
						v, ok := c.Get(op.key)
						if ok != op.want || (ok && v != op.val) {
							t.Fatalf("op %d: Get(%q) = %d, %v; want %d, %v", i, op.key, v, ok, op.val, op.want)
						}
					case "remove":
						if got := c.Remove(op.key); got != op.want {
							t.Fatalf("op %d: Remove(%q) = %v, want %v", i, op.key, got, op.want)
						}
					case "removeIf":
						if got := c.RemoveFunc(func(_ string, v int) bool { return v == op.val }); got != op.n {
							t.Fatalf("op %d: RemoveFunc(== %d) = %d, want %d", i, op.val, got, op.n)
						}
					case "purge":
						if got := c.Purge(); got != op.n {
							t.Fatalf("op %d: Purge() = %d, want %d", i, got, op.n)
						}
					case "advance":
						time.Sleep(op.ttl)
					default:
						t.Fatalf("op %d: unknown op %q", i, op.op)
					}
				}
				if got := lruKeys(c); !slices.Equal(got, tt.wantKeys) {
					t.Errorf("keys = %q, want %q", got, tt.wantKeys)
				}
				if c.Len() != len(tt.wantKeys) {
					t.Errorf("Len() = %d, want %d", c.Len(), len(tt.wantKeys))
				}
			})
		})
	}
}

// lruKeys lists the keys held, most recently used first.
func lruKeys[K comparable, V any](c *lru[K, V]) []K {
	keys := []K{}
	if !c.enabled() {
		return keys
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.ll.Front(); el != nil; el = el.Next() {
		keys = append(keys, el.Value.(*lruEntry[K, V]).key)
	}
	return keys
}

func TestLRUNilIsOff(t *testing.T) {
	var c *lru[string, int]
	c.Add("a", 1, time.Minute)
	if _, ok := c.Get("a"); ok || c.Len() != 0 || c.Remove("a") || c.Purge() != 0 || c.RemoveFunc(func(string, int) bool { return true }) != 0 {
		t.Error("a nil cache must store nothing and find nothing")
	}
}

// TestLRUConcurrent is for the race detector: every operation at once.
func TestLRUConcurrent(t *testing.T) {
	c := newLRU[string, int](16, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				k := fmt.Sprint(i % 32)
				switch (g + i) % 5 {
				case 0:
					c.Add(k, i, time.Minute)
				case 1:
					c.Get(k)
				case 2:
					c.Remove(k)
				case 3:
					c.RemoveFunc(func(_ string, v int) bool { return v%7 == 0 })
				case 4:
					if i%100 == 0 {
						c.Purge()
					}
					c.Len()
				}
			}
		})
	}
	wg.Wait()
	if n := c.Len(); n > 16 {
		t.Errorf("Len() = %d, above the maximum 16", n)
	}
}
