package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MinServerVersion is the oldest nats-server Latchkey works with: LK_LEASES
// needs per-message TTLs and limit markers, which came in 2.11.
const MinServerVersion = "2.11.0"

// Errors of Connect's check of the server.
var (
	// ErrServerTooOld: the server is older than MinServerVersion.
	ErrServerTooOld = errors.New("upgrade the NATS server")
	// ErrNoJetStream: the server, or this account on it, has no JetStream.
	ErrNoJetStream = errors.New("enable JetStream on the NATS server")
	// errJetStreamBusy: JetStream did not answer yet (a cluster still electing
	// its leader); worth trying again.
	errJetStreamBusy = errors.New("jetstream not answering yet")
)

// jetStreamCheckTimeout bounds Connect's wait for JetStream's answer.
const jetStreamCheckTimeout = 5 * time.Second

// checkServer fails when the connected server is older than MinServerVersion or
// has no JetStream for this account.
func checkServer(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, logger *slog.Logger) error {
	where := RedactURL(nc.ConnectedUrl())
	version := nc.ConnectedServerVersion()
	switch ok, err := versionAtLeast(version, MinServerVersion); {
	case err != nil:
		// A build with an odd version string; Ensure will still fail on what
		// it lacks.
		logger.WarnContext(ctx, "cannot read the nats server's version; not checking it", "server_version", version, "error", err)
	case !ok:
		return fmt.Errorf("NATS server %s at %s is too old: Latchkey needs %s or newer (per-message TTLs): %w",
			version, where, MinServerVersion, ErrServerTooOld)
	}
	actx, cancel := context.WithTimeout(ctx, jetStreamCheckTimeout)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("NATS server %s at %s has no JetStream for this account (run nats-server with -js, or enable JetStream for the account): %w",
				version, where, ErrNoJetStream)
		}
		return fmt.Errorf("%w: asking for account info: %w", errJetStreamBusy, err)
	}
	return nil
}

// versionAtLeast compares two versions "major.minor.patch", ignoring a leading
// "v" and a pre-release or build suffix (2.11.0-RC.1 counts as 2.11.0).
func versionAtLeast(have, want string) (bool, error) {
	h, err := parseVersion(have)
	if err != nil {
		return false, err
	}
	w, err := parseVersion(want)
	if err != nil {
		return false, err
	}
	for i := range h {
		if h[i] != w[i] {
			return h[i] > w[i], nil
		}
	}
	return true, nil
}

func parseVersion(v string) ([3]int, error) {
	var out [3]int
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return out, fmt.Errorf("version %q is not major.minor.patch", v)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, fmt.Errorf("version %q is not major.minor.patch", v)
		}
		out[i] = n
	}
	return out, nil
}
