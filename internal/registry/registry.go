// Package registry is the one shape every kevents plugin kind registers in (source types,
// trigger types): a name, a spec that drives validation and docs, and a constructor.
package registry

import (
	"fmt"
	"sort"
	"sync"

	"github.com/kevents/kevents/api"
)

// Entry is one registered plugin.
type Entry[S, C any] struct {
	Spec S
	New  C
}

// Registry maps plugin names to entries. It is safe for concurrent use; plugins register from
// init functions.
type Registry[S, C any] struct {
	kind    string // "eventsource type", "trigger type": used in errors
	mu      sync.RWMutex
	entries map[string]Entry[S, C]
}

// New returns an empty registry for plugins of the given kind.
func New[S, C any](kind string) *Registry[S, C] {
	return &Registry[S, C]{kind: kind, entries: map[string]Entry[S, C]{}}
}

// Register adds a plugin. It panics on a duplicate name: that is a programming error.
func (r *Registry[S, C]) Register(name string, spec S, ctor C) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.entries[name]; dup {
		panic(fmt.Sprintf("%s %q registered twice", r.kind, name))
	}
	r.entries[name] = Entry[S, C]{Spec: spec, New: ctor}
}

// Lookup returns the plugin registered under name, or an error wrapping api.ErrNotSupported
// such as `not supported yet: eventsource type "sqs"`.
func (r *Registry[S, C]) Lookup(name string) (Entry[S, C], error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.entries[name]
	if !ok {
		return Entry[S, C]{}, api.NotSupported(r.kind, name)
	}
	return e, nil
}

// Names lists the registered names, sorted.
func (r *Registry[S, C]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.entries))
	for name := range r.entries {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
