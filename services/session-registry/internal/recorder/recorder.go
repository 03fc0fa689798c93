// Package recorder serves the hosted recorder of DESIGN.md section 8: a one-time URL
// (a signed token, minutes long) opens a page showing a live view of a browser context
// in a runner, and the person's clicks and keys go back to it. Frames and input travel
// over core NATS (lk.live.<recording>.frames|input), sealed with a key derived from the
// internal token, so the runner can be anywhere and nothing typed crosses NATS in
// clear. The page is self-contained (no external assets).
package recorder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/libs/bus"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// urlKeyPurpose is the bus.DeriveKey purpose of the key that signs recorder tokens.
const urlKeyPurpose = "recorder-url/v1"

// Config configures the recorder.
type Config struct {
	// Secret is the internal token the services share; the signing and live-view keys
	// are derived from it. Required.
	Secret string
	// PublicURL is the base of the URLs handed out; empty: http://<ListenAddr()>.
	PublicURL string
	// TTL is how long a URL lives.
	TTL time.Duration
}

// Deps are what the recorder works with.
type Deps struct {
	Log *slog.Logger
	NC  *nats.Conn
	// Runs tells the page how the verification of a captured state ended.
	Runs latchkeyv1.RunServiceClient
	// ListenAddr is the HTTP listener's address, for the default public URL.
	ListenAddr func() string
}

// Recorder mints recorder URLs and serves their pages.
type Recorder struct {
	cfg     Config
	d       Deps
	urlKey  []byte
	liveKey []byte
	kv      atomic.Pointer[jetstream.KeyValue]
	// ctx ends every open live stream when the registry stops.
	ctx    context.Context
	cancel context.CancelFunc
	// claimed caches verified claims: token id -> the claim cookie's digest.
	claimed sync.Map
	now     func() time.Time
}

// New returns a recorder; Open makes it serve.
func New(cfg Config, d Deps) (*Recorder, error) {
	if cfg.Secret == "" {
		return nil, errors.New("recorder: the internal token is required to sign recorder URLs")
	}
	if d.Log == nil || d.NC == nil || d.Runs == nil || d.ListenAddr == nil {
		return nil, errors.New("recorder: logger, nats connection, runs client and listen address are required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Recorder{
		cfg: cfg, d: d, ctx: ctx, cancel: cancel, now: time.Now,
		urlKey: bus.DeriveKey(cfg.Secret, urlKeyPurpose), liveKey: bus.DeriveKey(cfg.Secret, bus.LiveKeyPurpose),
	}, nil
}

// Open binds the claims bucket (LK_RECORDINGS); until then pages answer 503.
func (r *Recorder) Open(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, bus.BucketRecordings)
	if err != nil {
		return fmt.Errorf("opening %s: %w", bus.BucketRecordings, err)
	}
	r.kv.Store(&kv)
	return nil
}

// Close ends every open live stream.
func (r *Recorder) Close() { r.cancel() }

// TTL is how long a recorder URL lives.
func (r *Recorder) TTL() time.Duration { return r.cfg.TTL }

// URL mints the one-time URL that records run's browser for the session until expire.
func (r *Recorder) URL(project, session, run string, expire time.Time) (string, error) {
	token, err := mint(r.urlKey, claims{Project: project, Session: session, Run: run, Expiry: expire.Unix()})
	if err != nil {
		return "", fmt.Errorf("minting recorder token: %w", err)
	}
	return r.base() + "/record/" + token, nil
}

func (r *Recorder) base() string {
	if r.cfg.PublicURL != "" {
		return strings.TrimRight(r.cfg.PublicURL, "/")
	}
	return (&url.URL{Scheme: "http", Host: r.d.ListenAddr()}).String()
}

// Mount adds the recorder's routes with handle (server.Server.Handle).
func (r *Recorder) Mount(handle func(pattern string, h http.Handler)) {
	handle("GET /record/{token}", http.HandlerFunc(r.page))
	handle("POST /record/{token}/claim", http.HandlerFunc(r.claimPage))
	handle("GET /record/{token}/frames", http.HandlerFunc(r.frames))
	handle("POST /record/{token}/input", http.HandlerFunc(r.input))
}
