package cloudevent

import (
	"strconv"
	"sync"
	"testing"
)

// TestValueCache: the first value added for a key stays, the cache stops growing at its bound,
// and readers and writers may run at once (run with -race).
func TestValueCache(t *testing.T) {
	var c valueCache[int]
	if _, ok := c.get([]byte("a")); ok || c.contains("a") {
		t.Fatal("an empty cache has a")
	}
	if got := c.add("a", 1); got != 1 {
		t.Fatalf("add a = %d, want 1", got)
	}
	if got := c.add("a", 2); got != 1 {
		t.Fatalf("second add a = %d, want the first value 1", got)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2 * maxCached {
				k := strconv.Itoa(g*10000 + i)
				c.add(k, i)
				c.get([]byte(k))
			}
		}()
	}
	wg.Wait()
	if n := len(*c.m.Load()); n != maxCached {
		t.Fatalf("%d values cached, want the bound %d", n, maxCached)
	}
	if v, ok := c.get([]byte("a")); !ok || v != 1 {
		t.Fatalf("a = %d, %v after filling; want 1", v, ok)
	}
	if got := c.add("not cached", 7); got != 7 {
		t.Fatalf("add to a full cache = %d, want the value given", got)
	}
	if c.contains("not cached") {
		t.Fatal("a full cache grew")
	}
}
