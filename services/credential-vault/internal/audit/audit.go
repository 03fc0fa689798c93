// Package audit records every decrypt and credential access the vault serves as a
// vaultv1.AuditEvent on lk.audit.<project> (stream LK_AUDIT), with the caller's trace
// context in the message headers, and reads them back page by page.
package audit

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/bus"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
)

// Page sizes of List.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// maxScan bounds the events one List call reads while filtering by resource; a
	// page may then hold fewer events than asked, with a token to go on.
	maxScan = 10000
)

// ErrBadPageToken is a page token List did not return.
var ErrBadPageToken = errors.New("invalid page token")

// Log publishes and lists audit events.
type Log struct {
	js     jetstream.JetStream
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	random io.Reader
}

// New returns a Log over js.
func New(js jetstream.JetStream, tracer trace.Tracer, prop propagation.TextMapPropagator, random io.Reader) *Log {
	return &Log{js: js, tracer: tracer, prop: prop, random: random}
}

// Publish stores ev on LK_AUDIT and waits for JetStream's acknowledgement, so a
// caller that goes on to release plaintext knows the access is on record.
func (l *Log) Publish(ctx context.Context, ev *vaultv1.AuditEvent) error {
	subject, err := bus.AuditSubject(ev.GetProjectId())
	if err != nil {
		return fmt.Errorf("publishing audit event: %w", err)
	}
	ctx, span := bus.StartProducerSpan(ctx, l.tracer, subject, "audit publish")
	defer span.End()
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding audit event: %w", err)
	}
	id := make([]byte, 16)
	if _, err := io.ReadFull(l.random, id); err != nil {
		return fmt.Errorf("generating audit event id: %w", err)
	}
	if _, err := l.js.PublishMsg(ctx, bus.NewMsg(ctx, l.prop, subject, data, hex.EncodeToString(id))); err != nil {
		span.SetStatus(codes.Error, "publish failed")
		return fmt.Errorf("publishing audit event: %w", err)
	}
	return nil
}

// List returns a project's events oldest first, only those of resource when it is
// set, starting where token (from a previous call; empty: the beginning) points, and
// the token of the next page ("" at the end).
func (l *Log) List(ctx context.Context, project, resource string, pageSize int, token string) ([]*vaultv1.AuditEvent, string, error) {
	start, err := parseToken(token)
	if err != nil {
		return nil, "", err
	}
	subject, err := bus.AuditSubject(project)
	if err != nil {
		return nil, "", err
	}
	stream, err := l.js.Stream(ctx, bus.StreamAudit)
	if err != nil {
		return nil, "", fmt.Errorf("opening audit stream: %w", err)
	}
	cfg := jetstream.ConsumerConfig{
		FilterSubject: subject, AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true,
		InactiveThreshold: time.Minute, DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if start > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("reading audit events: %w", err)
	}
	defer func() { _ = stream.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	if cons.CachedInfo().NumPending == 0 {
		return nil, "", nil
	}
	return read(cons, resource, pageSize)
}

// read fetches events from cons until the page is full, the stream's end, or maxScan.
func read(cons jetstream.Consumer, resource string, pageSize int) ([]*vaultv1.AuditEvent, string, error) {
	var events []*vaultv1.AuditEvent
	scanned := 0
	for {
		batch, err := cons.FetchNoWait(min(pageSize-len(events), 256))
		if err != nil {
			return nil, "", fmt.Errorf("reading audit events: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			scanned++
			meta, err := msg.Metadata()
			if err != nil {
				return nil, "", fmt.Errorf("reading audit events: %w", err)
			}
			ev := &vaultv1.AuditEvent{}
			if err := proto.Unmarshal(msg.Data(), ev); err == nil && (resource == "" || ev.GetResourceId() == resource) {
				events = append(events, ev)
			}
			next := ""
			if meta.NumPending > 0 {
				next = strconv.FormatUint(meta.Sequence.Stream+1, 10)
			}
			if next == "" || len(events) == pageSize || scanned >= maxScan {
				// Drain the rest of the batch; it is re-read from next.
				for range batch.Messages() {
				}
				return events, next, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, "", fmt.Errorf("reading audit events: %w", err)
		}
		if got == 0 {
			return events, "", nil
		}
	}
}

func parseToken(token string) (uint64, error) {
	if token == "" {
		return 0, nil
	}
	seq, err := strconv.ParseUint(token, 10, 64)
	if err != nil || seq == 0 {
		return 0, ErrBadPageToken
	}
	return seq, nil
}
