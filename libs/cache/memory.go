package cache

import (
	"container/list"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Defaults of MemoryOptions.
const (
	DefaultMemoryMaxEntries = 10_000
	DefaultMemoryMaxBytes   = 64 << 20
)

// MemoryOptions bounds a Memory cache. Zero values take the defaults.
type MemoryOptions struct {
	// MaxEntries is the most keys kept; the least recently used go first.
	MaxEntries int
	// MaxBytes is the most key and value bytes kept, the same way.
	MaxBytes int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Memory is an in-process Cache with the same semantics as Redis: TTL
// expiry, fixed-window counters, bounded by entries and bytes with
// least-recently-used eviction. It starts no goroutine: expired entries are
// dropped when met or evicted. Safe for concurrent use.
type Memory struct {
	maxEntries int
	maxBytes   int
	now        func() time.Time

	mu    sync.Mutex
	lru   *list.List // of *memEntry, most recently used at the front
	items map[string]*list.Element
	bytes int
}

type memEntry struct {
	key     string
	value   []byte
	expires time.Time
}

func (e *memEntry) size() int { return len(e.key) + len(e.value) }

var _ Cache = (*Memory)(nil)

// NewMemory returns an empty in-process cache.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMemoryMaxEntries
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMemoryMaxBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Memory{
		maxEntries: opts.MaxEntries,
		maxBytes:   opts.MaxBytes,
		now:        opts.Now,
		lru:        list.New(),
		items:      make(map[string]*list.Element),
	}
}

// Get returns a copy of the value of key, or ErrMiss.
func (m *Memory) Get(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.live(key)
	if e == nil {
		return nil, ErrMiss
	}
	return append([]byte(nil), e.value...), nil
}

// Set stores a copy of value under key for ttl. A value larger than the
// whole cache is not kept.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	ttl, err := checkTTL(ttl)
	if err != nil {
		return fmt.Errorf("setting %q: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.put(key, append([]byte(nil), value...), m.now().Add(ttl))
	return nil
}

// Delete removes keys.
func (m *Memory) Delete(_ context.Context, keys ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if el, ok := m.items[k]; ok {
			m.remove(el)
		}
	}
	return nil
}

// Incr adds one to the counter key in its fixed window.
func (m *Memory) Incr(_ context.Context, key string, window time.Duration) (int64, error) {
	window, err := checkTTL(window)
	if err != nil {
		return 0, fmt.Errorf("incrementing %q: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, expires := int64(1), m.now().Add(window)
	if e := m.live(key); e != nil {
		cur, err := strconv.ParseInt(string(e.value), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("incrementing %q: %w", key, ErrNotCounter)
		}
		n, expires = cur+1, e.expires
	}
	m.put(key, strconv.AppendInt(nil, n, 10), expires)
	return n, nil
}

// Len returns the number of entries held, expired ones included until they
// are dropped.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

// live returns the unexpired entry of key, marking it recently used, and
// drops it if expired. Callers hold m.mu.
func (m *Memory) live(key string) *memEntry {
	el, ok := m.items[key]
	if !ok {
		return nil
	}
	e := el.Value.(*memEntry)
	if !m.now().Before(e.expires) {
		m.remove(el)
		return nil
	}
	m.lru.MoveToFront(el)
	return e
}

// put stores an entry and evicts until the bounds hold. Callers hold m.mu.
func (m *Memory) put(key string, value []byte, expires time.Time) {
	if el, ok := m.items[key]; ok {
		m.remove(el)
	}
	e := &memEntry{key: key, value: value, expires: expires}
	if e.size() > m.maxBytes {
		return
	}
	m.items[key] = m.lru.PushFront(e)
	m.bytes += e.size()
	for m.lru.Len() > m.maxEntries || m.bytes > m.maxBytes {
		m.remove(m.lru.Back())
	}
}

// remove drops an element. Callers hold m.mu.
func (m *Memory) remove(el *list.Element) {
	e := m.lru.Remove(el).(*memEntry)
	delete(m.items, e.key)
	m.bytes -= e.size()
}
