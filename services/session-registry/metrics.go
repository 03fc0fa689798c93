package registry

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/telemetry"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// sessionCountTTL is how long a count of sessions by state is reused: counting reads
// every session record, so scrapes every few seconds must not each do it.
const sessionCountTTL = 15 * time.Second

// registerMetrics reports latchkey.sessions, the sessions of every project by state
// (every state, 0 included, so a panel or alert sees a series for each).
func registerMetrics(mp metric.MeterProvider, st *store.Store) error {
	m := telemetry.Meter(mp, "github.com/latchkey/latchkey/services/session-registry")
	g, err := m.Int64ObservableGauge("latchkey.sessions", metric.WithUnit("{session}"),
		metric.WithDescription("AuthSessions by state, across projects (counted at most every 15 s)"))
	if err != nil {
		return err
	}
	var (
		mu     sync.Mutex
		at     time.Time
		counts map[latchkeyv1.SessionState]int64
	)
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		mu.Lock()
		defer mu.Unlock()
		if counts == nil || time.Since(at) > sessionCountTTL {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := st.CountByState(ctx)
			cancel()
			if err != nil && counts == nil {
				return nil // nothing to report yet; the next scrape tries again
			}
			if err == nil {
				counts, at = c, time.Now()
			}
		}
		for v, name := range latchkeyv1.SessionState_name {
			if v == 0 {
				continue
			}
			state := strings.TrimPrefix(name, "SESSION_STATE_")
			o.ObserveInt64(g, counts[latchkeyv1.SessionState(v)], metric.WithAttributes(attribute.String("state", state)))
		}
		return nil
	}, g)
	return err
}
