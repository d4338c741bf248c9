package hla

import (
	"container/list"
	"sync"
	"time"
)

// lru is a size-bounded cache whose entries also expire. It is the shape of
// both agent caches (the vendor's resource and session caches are LRU lists
// with a lifetime per entry), so one small type serves both.
//
// A cache of size 0 (or a nil *lru) stores nothing and misses every lookup:
// that is how the ACO turns a cache off, and callers need no special case.
// Expired entries are dropped when a lookup finds them or when eviction
// reaches them; no goroutine sweeps, so a cache cannot leak one.
type lru[K comparable, V any] struct {
	max int
	now func() time.Time

	mu sync.Mutex
	ll *list.List // front: most recently used
	m  map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time
}

func newLRU[K comparable, V any](max int, now func() time.Time) *lru[K, V] {
	if now == nil {
		now = time.Now
	}
	return &lru[K, V]{max: max, now: now, ll: list.New(), m: make(map[K]*list.Element)}
}

func (c *lru[K, V]) enabled() bool { return c != nil && c.max > 0 }

// size is the configured maximum, 0 when off.
func (c *lru[K, V]) size() int {
	if !c.enabled() {
		return 0
	}
	return c.max
}

// Get returns the value for k unless it is missing or has expired.
func (c *lru[K, V]) Get(k K) (V, bool) {
	var zero V
	if !c.enabled() {
		return zero, false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[K, V])
	if !now.Before(e.expires) {
		c.removeElement(el)
		return zero, false
	}
	c.ll.MoveToFront(el)
	return e.val, true
}

// Add stores v under k for ttl, replacing any previous value. A ttl that is
// not positive stores nothing, so that a caller bounding the ttl by a
// deadline already past does not have to check.
func (c *lru[K, V]) Add(k K, v V, ttl time.Duration) {
	if !c.enabled() || ttl <= 0 {
		return
	}
	exp := c.now().Add(ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		e := el.Value.(*lruEntry[K, V])
		e.val, e.expires = v, exp
		c.ll.MoveToFront(el)
		return
	}
	c.m[k] = c.ll.PushFront(&lruEntry[K, V]{key: k, val: v, expires: exp})
	for c.ll.Len() > c.max {
		c.removeElement(c.ll.Back())
	}
}

// Remove drops k and says whether it was there.
func (c *lru[K, V]) Remove(k K) bool {
	if !c.enabled() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if ok {
		c.removeElement(el)
	}
	return ok
}

// RemoveFunc drops every entry for which drop returns true and returns how
// many it dropped. drop runs under the cache's lock: it must not call back
// into the cache.
func (c *lru[K, V]) RemoveFunc(drop func(K, V) bool) int {
	if !c.enabled() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*lruEntry[K, V])
		if drop(e.key, e.val) {
			c.removeElement(el)
			n++
		}
		el = next
	}
	return n
}

// Purge empties the cache and returns how many entries it held.
func (c *lru[K, V]) Purge() int {
	if !c.enabled() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.ll.Len()
	c.ll.Init()
	clear(c.m)
	return n
}

// Len counts the entries held, expired ones included until they are found.
func (c *lru[K, V]) Len() int {
	if !c.enabled() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func (c *lru[K, V]) removeElement(el *list.Element) {
	c.ll.Remove(el)
	delete(c.m, el.Value.(*lruEntry[K, V]).key)
}
