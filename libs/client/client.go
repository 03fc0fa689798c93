// Package client is the Go client of Latchkey's public gRPC API (latchkey.v1): dial
// with a project's API key, start a Run and wait for its end, manage AuthSessions,
// Jobs and bundles, import and export storage states.
//
//	c, err := client.Dial("127.0.0.1:7400", client.Options{APIKey: key})
//	...
//	defer c.Close()
//	run, err := c.Run(ctx, &latchkeyv1.StartRunRequest{Api: "list-invoices", AuthSessionId: "alice"})
//	switch {
//	case errors.Is(err, client.ErrAuthSessionExpired): // a person must log in again
//	case err != nil:
//	default: // run.GetState() is final; run.GetOutput() holds the API's output
//	}
//
// Calls that fail Unavailable (a restarting server, a lost connection) are tried again
// with back-off; StartRun too, under an idempotency key the client sets when the
// request has none, so a retry never starts a second Run.
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// Errors a call may return, to test with errors.Is. Every error the server sends is
// also a gRPC status (status.Code works), with the server's message.
var (
	// ErrAuthSessionExpired: the Run's AuthSession is EXPIRED (FailedPrecondition,
	// reason AUTH_SESSION_EXPIRED); a person must log in again, or new credentials
	// must be stored, before Runs on it start.
	ErrAuthSessionExpired = errors.New("the AuthSession is expired")
	// ErrNotFound: the Run, session, Job, API or project does not exist.
	ErrNotFound = errs.ErrNotFound
	// ErrInvalidArgument: the request is malformed; the message names the field.
	ErrInvalidArgument = errs.ErrInvalid
	// ErrAlreadyExists: an object with that id exists.
	ErrAlreadyExists = errs.ErrExists
	// ErrFailedPrecondition: the object is not in a state that allows the call.
	ErrFailedPrecondition = errs.ErrPrecondition
	// ErrUnauthenticated: no API key, or an unknown or revoked one.
	ErrUnauthenticated = errs.ErrUnauthenticated
	// ErrPermissionDenied: the key may not do this (another project's object).
	ErrPermissionDenied = errs.ErrDenied
	// ErrUnavailable: the server could not be reached, after the retries.
	ErrUnavailable = errs.ErrUnavailable
)

// reasonAuthSessionExpired is the ErrorInfo reason of ErrAuthSessionExpired.
const reasonAuthSessionExpired = "AUTH_SESSION_EXPIRED"

// Options configure a Client.
type Options struct {
	// APIKey is a project's API key ("lk_..."), sent with every call.
	APIKey string
	// TLS, when set, dials with TLS (a client certificate in it too, for mTLS); nil
	// dials in plaintext, as `latchkey dev` listens on loopback.
	TLS *tls.Config
	// MaxAttempts bounds the tries of a call that fails Unavailable; default 4.
	MaxAttempts int
	// Header is metadata sent with every call besides the key (operators' tools name
	// themselves in x-latchkey-service).
	Header map[string]string
	// DialOptions are added to the client's own (tracing, interceptors).
	DialOptions []grpc.DialOption
}

// Client calls Latchkey's public API. It is safe for concurrent use; Close it when done.
type Client struct {
	conn *grpc.ClientConn

	Runs        latchkeyv1.RunServiceClient
	Sessions    latchkeyv1.AuthSessionServiceClient
	Jobs        latchkeyv1.JobServiceClient
	Automations latchkeyv1.AutomationServiceClient
	Projects    latchkeyv1.ProjectServiceClient
}

// Dial returns a Client of the API at addr ("host:port"). It does not block: the
// connection is made on the first call.
func Dial(addr string, o Options) (*Client, error) {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 4
	}
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(retryUnary(o.MaxAttempts), typedUnary),
		grpc.WithChainStreamInterceptor(typedStream),
	}
	if o.APIKey != "" || len(o.Header) > 0 {
		opts = append(opts, grpc.WithPerRPCCredentials(apiKey{key: o.APIKey, header: o.Header, secure: o.TLS != nil}))
	}
	cc, err := grpc.NewClient(addr, append(opts, o.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return &Client{
		conn: cc, Runs: latchkeyv1.NewRunServiceClient(cc), Sessions: latchkeyv1.NewAuthSessionServiceClient(cc),
		Jobs: latchkeyv1.NewJobServiceClient(cc), Automations: latchkeyv1.NewAutomationServiceClient(cc),
		Projects: latchkeyv1.NewProjectServiceClient(cc),
	}, nil
}

// Conn is the client's connection, for services this package has no field for.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// StartRun starts a Run and returns it as queued. A request without an idempotency
// key gets one, so a retry after a lost answer returns the same Run.
func (c *Client) StartRun(ctx context.Context, req *latchkeyv1.StartRunRequest) (*latchkeyv1.Run, error) {
	if req.GetIdempotencyKey() == "" {
		req = proto.CloneOf(req)
		req.IdempotencyKey = "client:" + randomID()
	}
	resp, err := c.Runs.StartRun(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetRun(), nil
}

// Wait follows a Run until it ends and returns it in its final state (SUCCEEDED,
// FAILED, CANCELED). A broken stream is watched again; each change is passed to
// progress when it is not nil. The Run's own failure is in the returned Run, not
// in the error: the error is for Wait's trouble (ctx ended, an unknown Run).
func (c *Client) Wait(ctx context.Context, runID string, progress func(*latchkeyv1.WatchRunResponse)) (*latchkeyv1.Run, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 100*time.Millisecond, 2*time.Second
	for {
		run, err := c.watchOnce(ctx, runID, progress)
		if run != nil && domain.RunEnded(run.GetState()) {
			return run, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil && !errors.Is(err, ErrUnavailable) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(b.NextBackOff()):
		}
	}
}

// watchOnce reads one WatchRun stream to its end and returns the last Run it saw.
func (c *Client) watchOnce(ctx context.Context, runID string, progress func(*latchkeyv1.WatchRunResponse)) (*latchkeyv1.Run, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Runs.WatchRun(ctx, &latchkeyv1.WatchRunRequest{RunId: runID})
	if err != nil {
		return nil, err
	}
	var last *latchkeyv1.Run
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if last == nil {
				return nil, io.ErrUnexpectedEOF
			}
			return last, nil
		}
		if err != nil {
			return last, err
		}
		last = m.GetRun()
		if progress != nil {
			progress(m)
		}
		if domain.RunEnded(last.GetState()) {
			return last, nil
		}
	}
}

// Run starts a Run and waits for its end (StartRun, then Wait).
func (c *Client) Run(ctx context.Context, req *latchkeyv1.StartRunRequest) (*latchkeyv1.Run, error) {
	run, err := c.StartRun(ctx, req)
	if err != nil {
		return nil, err
	}
	return c.Wait(ctx, run.GetId(), nil)
}

// ImportStorageState gives an AuthSession a Playwright storageState (JSON) as its new
// state, for example one exported from a browser a person logged in with.
func (c *Client) ImportStorageState(ctx context.Context, sessionID string, storageStateJSON []byte) (*latchkeyv1.AuthSession, error) {
	resp, err := c.Sessions.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: sessionID, StorageStateJson: storageStateJSON})
	if err != nil {
		return nil, err
	}
	return resp.GetAuthSession(), nil
}

// ExportStorageState returns an AuthSession's state as Playwright storageState JSON
// (revision 0: the newest) and the revision it is.
func (c *Client) ExportStorageState(ctx context.Context, sessionID string, revision int64) ([]byte, int64, error) {
	resp, err := c.Sessions.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: sessionID, Revision: revision})
	if err != nil {
		return nil, 0, err
	}
	return resp.GetStorageStateJson(), resp.GetRevision(), nil
}

// apiKey sends the key as "authorization: Bearer <key>", and the header.
type apiKey struct {
	key    string
	header map[string]string
	secure bool
}

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	md := make(map[string]string, len(k.header)+1)
	for name, v := range k.header {
		md[name] = v
	}
	if k.key != "" {
		md["authorization"] = "Bearer " + k.key
	}
	return md, nil
}

// RequireTransportSecurity is false without TLS: `latchkey dev` listens in plaintext
// on loopback. Across machines, set Options.TLS.
func (k apiKey) RequireTransportSecurity() bool { return k.secure }

// retryUnary tries a call that failed Unavailable again, up to attempts in all, with
// exponential back-off.
func retryUnary(attempts int) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		op := func() (struct{}, error) {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err != nil && !errors.Is(errs.FromStatus(err), errs.ErrUnavailable) {
				return struct{}{}, backoff.Permanent(err)
			}
			return struct{}{}, err
		}
		_, err := backoff.Retry(ctx, op, backoff.WithMaxTries(uint(attempts)),
			backoff.WithBackOff(&backoff.ExponentialBackOff{InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 2 * time.Second}))
		var permanent *backoff.PermanentError
		if errors.As(err, &permanent) { // the last try's refusal
			err = permanent.Unwrap()
		}
		return err
	}
}

// typedUnary makes the server's refusals errors.Is-able (ErrNotFound, ...), with
// ErrAuthSessionExpired for its reason.
func typedUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return typed(invoker(ctx, method, req, reply, cc, opts...))
}

func typedStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, typed(err)
	}
	return typedClientStream{s}, nil
}

type typedClientStream struct{ grpc.ClientStream }

func (s typedClientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if errors.Is(err, io.EOF) {
		return err
	}
	return typed(err)
}

func typed(err error) error {
	if err == nil {
		return nil
	}
	err = errs.FromStatus(err)
	if errs.HasReason(err, reasonAuthSessionExpired) {
		return reasoned{err: err, sentinel: ErrAuthSessionExpired}
	}
	return err
}

// reasoned is a server error that is also one of this package's sentinels.
type reasoned struct{ err, sentinel error }

func (r reasoned) Error() string   { return r.err.Error() }
func (r reasoned) Unwrap() []error { return []error{r.err, r.sentinel} }

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
