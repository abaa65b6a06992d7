package cloudevent

import (
	"maps"
	"sync"
	"sync/atomic"
)

// maxCached bounds each cache of header values: a topic's events share a handful of sources,
// types, subjects and content types, and a stream of distinct values costs a parse each, not
// memory.
const maxCached = 1024

// valueCache maps header values to what they decode to, for the decoding of every record.
// Lookups take no lock and hash a plain string (sync.Map hashed an interface, a good part of
// decoding): the map is replaced, never changed, when a value is added. Adding copies it, which
// the bound keeps cheap, and happens once per distinct value.
type valueCache[V any] struct {
	mu sync.Mutex // serializes adds
	m  atomic.Pointer[map[string]V]
}

func (c *valueCache[V]) get(k []byte) (V, bool) {
	if m := c.m.Load(); m != nil {
		v, ok := (*m)[string(k)]
		return v, ok
	}
	var zero V
	return zero, false
}

func (c *valueCache[V]) contains(k string) bool {
	if m := c.m.Load(); m != nil {
		_, ok := (*m)[k]
		return ok
	}
	return false
}

// add caches v for k, unless the cache is full, and returns what is cached for k: v, or the
// value another goroutine added first.
func (c *valueCache[V]) add(k string, v V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next map[string]V
	if cur := c.m.Load(); cur != nil {
		if old, ok := (*cur)[k]; ok {
			return old
		}
		if len(*cur) >= maxCached {
			return v
		}
		next = make(map[string]V, len(*cur)+1)
		maps.Copy(next, *cur)
	} else {
		next = map[string]V{}
	}
	next[k] = v
	c.m.Store(&next)
	return v
}
