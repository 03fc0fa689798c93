package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// The streams behind KV buckets and object stores are named by these prefixes
// and the bucket's name.
const (
	kvStreamPrefix     = "KV_"
	objectStreamPrefix = "OBJ_"
)

// JetStream API error codes Ensure explains (nats-server's errors.json).
const (
	errCodeClusterNoPeers        = 10005 // "no suitable peers for placement"
	errCodeInsufficientResources = 10023 // "insufficient resources"
	errCodeReplicasNotSupported  = 10074 // "replicas > 1 not supported in non-clustered mode"
)

// replicasFor is how many replicas stream should have: o.Replicas, or what it
// has when that is more. Lowering them would drop copies of Runs, sessions and
// secrets; a service started with a forgotten setting must not do that.
func replicasFor(ctx context.Context, js jetstream.JetStream, stream string, o Options) (int, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return o.Replicas, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading its replicas: %w", err)
	}
	if have := s.CachedInfo().Config.Replicas; have > o.Replicas {
		o.Logger.WarnContext(ctx, "stream keeps more replicas than asked for: Ensure never lowers them",
			"stream", stream, "replicas", have, "asked_for", o.Replicas)
		return have, nil
	}
	return o.Replicas, nil
}

// replicasError explains a server's refusal to place o.Replicas copies, and
// returns any other error as it is.
func replicasError(js jetstream.JetStream, o Options, err error) error {
	var apiErr *jetstream.APIError
	if o.Replicas <= 1 || !errors.As(err, &apiErr) {
		return err
	}
	nc := js.Conn()
	switch apiErr.ErrorCode {
	case errCodeReplicasNotSupported:
		return fmt.Errorf("%w: %d replicas need a JetStream cluster of at least %d servers, but the NATS server at %s runs alone (a cluster of 1): %w",
			ErrTooManyReplicas, o.Replicas, o.Replicas, RedactURL(nc.ConnectedUrl()), err)
	case errCodeClusterNoPeers, errCodeInsufficientResources:
		return fmt.Errorf("%w: %d replicas need at least %d servers with JetStream and free storage in NATS cluster %q, and it cannot place them: %w",
			ErrTooManyReplicas, o.Replicas, o.Replicas, nc.ConnectedClusterName(), err)
	}
	return err
}
