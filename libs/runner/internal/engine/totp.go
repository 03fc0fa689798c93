package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// totpSteps remembers, per session and TOTP secret, the last time step a login used,
// so that no two logins send a code of the same step: sites that follow RFC 6238
// section 5.2 refuse a code already accepted, and two logins of one session 10 s
// apart may run on different runners. With JetStream the record is the LK_TOTP key
// of the pair (compare-and-swap, shared by every runner); without it (latchkey try, a
// runner whose NATS lacks the bucket) it is this process's memory.
type totpSteps struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu   sync.Mutex // guards kv, warned and last
	kv   jetstream.KeyValue
	last map[string]uint64 // the in-memory record, by key
	// warned: the bucket is missing and this runner said so once.
	warned bool
}

func newTOTPSteps(js jetstream.JetStream, log *slog.Logger) *totpSteps {
	return &totpSteps{js: js, log: log, last: map[string]uint64{}}
}

// totpKey names the record of a session's secret without revealing the secret.
func totpKey(project, session, secret string) string {
	h := sha256.Sum256([]byte("latchkey totp\x00" + project + "\x00" + session + "\x00" + secret))
	return "step." + hex.EncodeToString(h[:16])
}

// reserve returns the first step at or after want that the key's record has not
// seen, and records it.
func (t *totpSteps) reserve(ctx context.Context, key string, want uint64) (uint64, error) {
	kv, err := t.bucket(ctx)
	if err != nil {
		return 0, err
	}
	if kv == nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		step := want
		if last := t.last[key]; last >= want {
			step = last + 1
		}
		t.last[key] = step
		return step, nil
	}
	var step uint64
	_, _, err = bus.Update(ctx, 0,
		func(ctx context.Context) (uint64, uint64, error) {
			e, err := kv.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return 0, 0, nil
			}
			if err != nil {
				return 0, 0, err
			}
			last, err := strconv.ParseUint(string(e.Value()), 10, 64)
			if err != nil {
				return 0, e.Revision(), nil // unreadable: as if unused
			}
			return last, e.Revision(), nil
		},
		func(ctx context.Context, _ uint64, rev uint64) (uint64, error) {
			v := []byte(strconv.FormatUint(step, 10))
			if rev == 0 {
				return kv.Create(ctx, key, v)
			}
			return kv.Update(ctx, key, v, rev)
		},
		func(last uint64) error {
			step = want
			if last >= want {
				step = last + 1
			}
			return nil
		})
	if err != nil {
		return 0, sdk.Infra("recording the TOTP time step in %s: %w", bus.BucketTOTP, err)
	}
	return step, nil
}

// bucket opens LK_TOTP once; nil means the in-memory record.
func (t *totpSteps) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	if t.js == nil {
		return nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kv != nil || t.warned {
		return t.kv, nil
	}
	kv, err := t.js.KeyValue(ctx, bus.BucketTOTP)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		t.warned = true
		t.log.WarnContext(ctx, "the TOTP bucket is missing: TOTP time steps are remembered by this runner only; run a service that declares the buckets (latchkey serve registry)", "bucket", bus.BucketTOTP)
		return nil, nil
	case err != nil:
		return nil, sdk.Infra("opening %s: %w", bus.BucketTOTP, err)
	}
	t.kv = kv
	return kv, nil
}

// ReserveTOTP reserves a time step of secret for the task's session (interp.Host).
func (e *execution) ReserveTOTP(ctx context.Context, secret string, step uint64) (uint64, error) {
	key := totpKey(e.task.GetProjectId(), e.task.GetSession().GetAuthSessionId(), secret)
	got, err := e.r.totp.reserve(ctx, key, step)
	if err != nil {
		return 0, fmt.Errorf("reserving a TOTP time step: %w", err)
	}
	return got, nil
}
