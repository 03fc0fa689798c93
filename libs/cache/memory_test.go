package cache_test

import (
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/libs/cache"
	"github.com/latchkey/latchkey/libs/testkit"
)

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := cache.NewMemory(cache.MemoryOptions{MaxEntries: 3})
	for _, k := range []string{"a", "b", "c"} {
		if err := m.Set(ctx, k, []byte(k), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	mustGet(t, ctx, m, "a", []byte("a")) // a is now the most recent; b the least
	if err := m.Set(ctx, "d", []byte("d"), time.Minute); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, ctx, m, "b")
	for _, k := range []string{"a", "c", "d"} {
		mustGet(t, ctx, m, k, []byte(k))
	}
	if m.Len() != 3 {
		t.Errorf("Len = %d, want 3", m.Len())
	}
}

func TestMemoryBoundsBytes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := cache.NewMemory(cache.MemoryOptions{MaxBytes: 100})
	big := []byte(strings.Repeat("x", 45))
	for _, k := range []string{"1", "2", "3"} {
		if err := m.Set(ctx, k, big, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	mustMiss(t, ctx, m, "1")
	mustGet(t, ctx, m, "3", big)
	// A value larger than the whole cache is not kept, and evicts nothing.
	if err := m.Set(ctx, "huge", make([]byte, 200), time.Minute); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, ctx, m, "huge")
	mustGet(t, ctx, m, "2", big)
}

func TestMemoryExpiryWithClock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := cache.NewMemory(cache.MemoryOptions{Now: clk.Now})
	if err := m.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := m.Incr(ctx, "n", time.Minute); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	clk.Advance(59 * time.Second)
	mustGet(t, ctx, m, "k", []byte("v"))
	if n, err := m.Incr(ctx, "n", time.Minute); err != nil || n != 2 {
		t.Fatal(n, err)
	}
	clk.Advance(time.Second)
	mustMiss(t, ctx, m, "k")
	if n, err := m.Incr(ctx, "n", time.Minute); err != nil || n != 1 {
		t.Fatalf("Incr after the window = %d, %v; want 1", n, err)
	}
	if m.Len() != 1 {
		t.Errorf("Len = %d after expired entries were met, want 1", m.Len())
	}
}
