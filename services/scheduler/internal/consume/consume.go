// Package consume runs the scheduler's JetStream consumers: task results, session
// events and NATS run requests. Consumers are durable and shared, so any number of
// scheduler replicas split the messages; every message is acked, nak'ed with a delay,
// or terminated.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/libs/bus"
)

// Handler handles one message in the context of its consumer span. Its error says
// what becomes of the message: nil acks it, a *Redeliver naks it with its delay, one
// wrapping ErrTerminal terminates it, any other naks it for redelivery in a second.
type Handler func(ctx context.Context, msg jetstream.Msg) error

// ErrTerminal, wrapped by a handler's error, drops a message that can never succeed.
var ErrTerminal = errors.New("terminal")

// Redeliver, returned by a handler, asks for the message again after Delay.
type Redeliver struct{ Delay time.Duration }

func (r *Redeliver) Error() string { return fmt.Sprintf("redeliver after %s", r.Delay) }

// Spec describes one durable consumer.
type Spec struct {
	Stream, Durable, Filter string
	// DeliverNew starts a new consumer at the stream's end (events), not its start.
	DeliverNew bool
	// Workers handle messages concurrently.
	Workers int
	Handler Handler
	// SpanName names the consumer span.
	SpanName string
}

// Runner runs consumers until Stop.
type Runner struct {
	js     jetstream.JetStream
	tracer trace.Tracer
	log    *slog.Logger
	mu     sync.Mutex
	ctxs   []jetstream.ConsumeContext
	wg     sync.WaitGroup
	cancel context.CancelFunc
	ctx    context.Context
}

// NewRunner returns a consumer runner.
func NewRunner(js jetstream.JetStream, tracer trace.Tracer, log *slog.Logger) *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{js: js, tracer: tracer, log: log, ctx: ctx, cancel: cancel}
}

// Start declares the consumer (idempotently) and starts consuming.
func (r *Runner) Start(ctx context.Context, s Spec) error {
	cfg := jetstream.ConsumerConfig{
		Durable: s.Durable, FilterSubject: s.Filter, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Minute, MaxDeliver: 50, MaxAckPending: 1024,
	}
	if s.DeliverNew {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	cons, err := r.js.CreateOrUpdateConsumer(ctx, s.Stream, cfg)
	if err != nil {
		return fmt.Errorf("declaring consumer %s: %w", s.Durable, err)
	}
	workers := max(s.Workers, 1)
	sem := make(chan struct{}, workers)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		sem <- struct{}{}
		r.wg.Add(1)
		go func() {
			defer func() { <-sem; r.wg.Done() }()
			r.handle(s, msg)
		}()
	}, jetstream.PullMaxMessages(workers*2))
	if err != nil {
		return fmt.Errorf("consuming %s: %w", s.Durable, err)
	}
	r.mu.Lock()
	r.ctxs = append(r.ctxs, cc)
	r.mu.Unlock()
	return nil
}

func (r *Runner) handle(s Spec, msg jetstream.Msg) {
	ctx, span := bus.StartConsumerSpan(r.ctx, r.tracer, bus.Propagator(), msg, s.SpanName)
	defer span.End()
	err := safely(ctx, s.Handler, msg)
	var retry *Redeliver
	switch {
	case err == nil:
		_ = msg.Ack()
	case errors.As(err, &retry):
		_ = msg.NakWithDelay(retry.Delay)
	case errors.Is(err, ErrTerminal):
		span.SetStatus(codes.Error, err.Error())
		r.log.WarnContext(ctx, "dropping message", "consumer", s.Durable, "error", err)
		_ = msg.Term()
	default:
		span.SetStatus(codes.Error, err.Error())
		r.log.WarnContext(ctx, "handling message failed; redelivering", "consumer", s.Durable, "error", err)
		_ = msg.NakWithDelay(time.Second)
	}
}

// Stop stops taking messages, then waits (bounded by ctx) for those in hand.
func (r *Runner) Stop(ctx context.Context) {
	r.mu.Lock()
	for _, cc := range r.ctxs {
		cc.Drain()
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	r.cancel()
	r.mu.Lock()
	for _, cc := range r.ctxs {
		cc.Stop()
		<-cc.Closed()
	}
	r.ctxs = nil
	r.mu.Unlock()
}

// safely runs h, turning a panic into an error so one bad message cannot stop the
// scheduler; the message is redelivered and, past MaxDeliver, dropped.
func safely(ctx context.Context, h Handler, msg jetstream.Msg) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic handling message: %v\n%s", p, debug.Stack())
		}
	}()
	return h(ctx, msg)
}
