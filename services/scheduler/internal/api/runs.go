// Package api implements the scheduler's public RunService: StartRun (also used by the
// NATS intake), GetRun, ListRuns, CancelRun, ResumeRun and WatchRun.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/scheduler/internal/orch"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// Limits of StartRun, each answered with InvalidArgument when exceeded.
const (
	DefaultTimeout    = 5 * time.Minute
	MaxTimeout        = time.Hour
	MaxCheckAttempts  = 10
	MaxCreateAttempts = 5
	MaxRetries        = 5
	MaxParamsBytes    = 256 << 10
	MaxIdempotencyKey = 128
	DefaultPageSize   = 50
	MaxPageSize       = 500
	// ErrorDomain is the domain of the ErrorInfo details on errors with a typed reason.
	ErrorDomain = "latchkey.dev"
)

// Runs implements latchkey.v1.RunService.
type Runs struct {
	latchkeyv1.UnimplementedRunServiceServer
	// Orch and Store are set when the scheduler starts (SetOrchestrator); calls before
	// that answer Unavailable.
	Orch     *orch.Orchestrator
	Store    *store.Store
	started  atomic.Bool
	Registry registryv1.SessionStateServiceClient
	Vault    vaultv1.VaultServiceClient
	NC       *nats.Conn
	Log      *slog.Logger

	bundles sync.Map // project -> cachedBundle
}

type cachedBundle struct {
	version int64
	apis    map[string]bool
	expires time.Time
}

// bundleTTL bounds how long a deploy takes to reach StartRun's API check.
const bundleTTL = 2 * time.Second

// SetOrchestrator gives the API its orchestrator and store and lets it answer.
func (r *Runs) SetOrchestrator(o *orch.Orchestrator, st *store.Store) {
	r.Orch, r.Store = o, st
	r.started.Store(true)
}

// project is the caller's project, once the scheduler has started.
func (r *Runs) project(ctx context.Context) (string, error) {
	if !r.started.Load() {
		return "", status.Error(codes.Unavailable, "the scheduler is starting: try again in a moment")
	}
	p, _ := server.PrincipalFrom(ctx)
	if p.ProjectID == "" {
		return "", status.Error(codes.PermissionDenied, "Runs belong to a project: call with a project API key (the admin key manages projects only)")
	}
	return p.ProjectID, nil
}

// StartRun queues a Run.
func (r *Runs) StartRun(ctx context.Context, req *latchkeyv1.StartRunRequest) (*latchkeyv1.StartRunResponse, error) {
	proj, err := r.project(ctx)
	if err != nil {
		return nil, err
	}
	p, _ := server.PrincipalFrom(ctx)
	run, err := r.Start(ctx, proj, p.Service != "", req, "")
	if err != nil {
		return nil, err
	}
	return &latchkeyv1.StartRunResponse{Run: run}, nil
}

// Start validates and queues a Run for project; internal callers may start AuthSession
// Runs. runID, when set, names the new Run (NATS publishers choose it).
func (r *Runs) Start(ctx context.Context, proj string, internal bool, req *latchkeyv1.StartRunRequest, runID string) (*latchkeyv1.Run, error) {
	return r.start(ctx, proj, internal, req, runID, "")
}

// start is Start for a Run that may belong to a JobRun (jobRunID, see jobs_runs.go).
func (r *Runs) start(ctx context.Context, proj string, internal bool, req *latchkeyv1.StartRunRequest, runID, jobRunID string) (*latchkeyv1.Run, error) {
	if err := validateStart(req, internal); err != nil {
		return nil, err
	}
	if runID == "" {
		runID = orch.NewID("run")
	} else if err := bus.CheckToken(runID); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "run_id: %v", err)
	}
	var sess *latchkeyv1.AuthSession
	if req.GetAuthSessionId() != "" {
		resp, err := r.Registry.GetSession(ctx, &registryv1.GetSessionRequest{ProjectId: proj, AuthSessionId: req.GetAuthSessionId()})
		if status.Code(err) == codes.NotFound || status.Code(err) == codes.InvalidArgument {
			return nil, status.Errorf(codes.NotFound, "auth session %q not found in this project", req.GetAuthSessionId())
		}
		if err != nil {
			return nil, r.internal(ctx, "reading session", err)
		}
		sess = resp.GetAuthSession()
		if err := checkSession(req, sess); err != nil {
			return nil, err
		}
	}
	kind := req.GetKind()
	if kind == latchkeyv1.RunKind_RUN_KIND_UNSPECIFIED {
		kind = latchkeyv1.RunKind_RUN_KIND_API
	}
	api := req.GetApi()
	version, err := r.bundleVersion(ctx, proj, api, kind)
	if err != nil {
		return nil, err
	}
	if key := req.GetIdempotencyKey(); key != "" {
		existing, fresh, err := r.Store.ClaimIdempotencyKey(ctx, proj, key, runID)
		if err != nil {
			return nil, r.internal(ctx, "claiming idempotency key", err)
		}
		if !fresh {
			rec, _, err := r.Store.Get(ctx, proj, existing)
			if err != nil {
				return nil, r.internal(ctx, "reading the idempotent run", err)
			}
			return rec.GetRun(), nil
		}
	}
	timeout := DefaultTimeout
	if d := req.GetOptions().GetTimeout(); d != nil {
		timeout = d.AsDuration()
	}
	now := time.Now()
	rec := &schedulerv1.RunRecord{
		Deadline: timestamppb.New(now.Add(timeout)),
		Run: &latchkeyv1.Run{
			Id: runID, ProjectId: proj, Kind: kind, State: latchkeyv1.RunState_RUN_STATE_QUEUED, Api: api,
			Params: req.GetParams(), AuthSessionId: req.GetAuthSessionId(), Options: req.GetOptions(),
			BundleVersion: version, CreateTime: timestamppb.New(now), IdempotencyKey: req.GetIdempotencyKey(),
			TraceId: trace.SpanContextFromContext(ctx).TraceID().String(), JobRunId: jobRunID,
		},
	}
	rec.TraceContext = r.Orch.TraceContextOf(ctx)
	if len(req.GetCredentials()) > 0 {
		if err := r.Orch.SealRuntimeCredentials(ctx, proj, runID, req.GetCredentials(), timeout+time.Minute); err != nil {
			r.releaseKey(ctx, proj, req)
			return nil, r.internal(ctx, "sealing runtime credentials", err)
		}
	}
	if err := r.Store.Create(ctx, rec); err != nil {
		r.releaseKey(ctx, proj, req)
		return nil, r.internal(ctx, "storing run", err)
	}
	r.Orch.Emit(ctx, rec.GetRun(), "queued")
	if err := r.Orch.Begin(ctx, rec, sess); err != nil && !orch.ErrStale(err) {
		// The Run is stored; the sweep dispatches it again.
		r.Log.WarnContext(ctx, "dispatching run failed; the sweep will retry", "run_id", runID, "error", err)
	}
	got, _, err := r.Store.Get(ctx, proj, runID)
	if err != nil {
		return rec.GetRun(), nil
	}
	return got.GetRun(), nil
}

func (r *Runs) releaseKey(ctx context.Context, proj string, req *latchkeyv1.StartRunRequest) {
	if req.GetIdempotencyKey() != "" {
		r.Store.ReleaseIdempotencyKey(ctx, proj, req.GetIdempotencyKey())
	}
}

// checkSession refuses Runs a session cannot serve.
func checkSession(req *latchkeyv1.StartRunRequest, sess *latchkeyv1.AuthSession) error {
	// Updating credentials and recording a login are how an EXPIRED session is fixed.
	fixes := req.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE || req.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD
	if sess.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED && !fixes {
		st := status.New(codes.FailedPrecondition, fmt.Sprintf(
			"auth session %q is EXPIRED (%s): update its credentials or log in again through the recorder before starting Runs",
			sess.GetId(), strings.TrimPrefix(sess.GetStateReason().String(), "FAILURE_REASON_")))
		st, _ = st.WithDetails(&errdetails.ErrorInfo{Reason: "AUTH_SESSION_EXPIRED", Domain: ErrorDomain, Metadata: map[string]string{"auth_session_id": sess.GetId()}})
		return st.Err()
	}
	if len(req.GetCredentials()) > 0 && sess.GetType() != latchkeyv1.SessionType_SESSION_TYPE_RUNTIME {
		return status.Errorf(codes.InvalidArgument, "credentials are passed with Runs only for RUNTIME sessions; auth session %q is %s", sess.GetId(), strings.TrimPrefix(sess.GetType().String(), "SESSION_TYPE_"))
	}
	return nil
}

// bundleVersion returns the newest bundle version that has api.
func (r *Runs) bundleVersion(ctx context.Context, proj, api string, kind latchkeyv1.RunKind) (int64, error) {
	if v, ok := r.bundles.Load(proj); ok && time.Now().Before(v.(cachedBundle).expires) {
		b := v.(cachedBundle)
		if b.apis[api] {
			return b.version, nil
		}
	}
	resp, err := r.Registry.GetBundle(ctx, &registryv1.GetBundleRequest{ProjectId: proj})
	if status.Code(err) == codes.NotFound {
		return 0, status.Error(codes.FailedPrecondition, "no automations are deployed in this project: deploy a bundle first (latchkey automations deploy DIR)")
	}
	if err != nil {
		return 0, r.internal(ctx, "reading bundle", err)
	}
	b := cachedBundle{version: resp.GetBundle().GetVersion(), apis: map[string]bool{}, expires: time.Now().Add(bundleTTL)}
	for _, a := range resp.GetBundle().GetAutomations() {
		b.apis[a.GetName()] = true
	}
	r.bundles.Store(proj, b)
	if !b.apis[api] {
		return 0, status.Errorf(codes.NotFound, "no API named %q in bundle version %d", api, b.version)
	}
	return b.version, nil
}

func validateStart(req *latchkeyv1.StartRunRequest, internal bool) error {
	kind := req.GetKind()
	switch kind {
	case latchkeyv1.RunKind_RUN_KIND_UNSPECIFIED, latchkeyv1.RunKind_RUN_KIND_API:
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD:
		if !internal {
			return status.Error(codes.PermissionDenied, "AuthSession Runs are started by Latchkey itself: create the session or update its credentials instead")
		}
		if req.GetAuthSessionId() == "" {
			return status.Error(codes.InvalidArgument, "auth_session_id is required for AuthSession Runs")
		}
	default:
		return status.Errorf(codes.InvalidArgument, "kind %s cannot be started with StartRun", kind)
	}
	if req.GetApi() == "" {
		return status.Error(codes.InvalidArgument, "api is required: the name of a deployed automation, for example list-invoices")
	}
	o := req.GetOptions()
	switch {
	case o.GetCheckAttempts() < 0 || o.GetCheckAttempts() > MaxCheckAttempts:
		return status.Errorf(codes.InvalidArgument, "options.check_attempts must be between 1 and %d", MaxCheckAttempts)
	case o.GetCreateAttempts() < 0 || o.GetCreateAttempts() > MaxCreateAttempts:
		return status.Errorf(codes.InvalidArgument, "options.create_attempts must be between 1 and %d", MaxCreateAttempts)
	case o.GetRetries() < 0 || o.GetRetries() > MaxRetries:
		return status.Errorf(codes.InvalidArgument, "options.retries must be between 0 and %d", MaxRetries)
	case o.GetTimeout() != nil && (o.GetTimeout().AsDuration() <= 0 || o.GetTimeout().AsDuration() > MaxTimeout):
		return status.Errorf(codes.InvalidArgument, "options.timeout must be between 0 and %s", MaxTimeout)
	case o.GetValidationFreshness() != nil && o.GetValidationFreshness().AsDuration() < 0:
		return status.Error(codes.InvalidArgument, "options.validation_freshness must not be negative")
	case proto.Size(req.GetParams()) > MaxParamsBytes:
		return status.Errorf(codes.InvalidArgument, "params are %d bytes, at most %d are allowed", proto.Size(req.GetParams()), MaxParamsBytes)
	case len(req.GetIdempotencyKey()) > MaxIdempotencyKey:
		return status.Errorf(codes.InvalidArgument, "idempotency_key is longer than %d characters", MaxIdempotencyKey)
	}
	if len(req.GetCredentials()) > 0 && req.GetAuthSessionId() == "" {
		return status.Error(codes.InvalidArgument, "credentials need an auth_session_id (a RUNTIME session)")
	}
	return nil
}

// internal logs an unexpected error in full and answers a generic Internal.
func (r *Runs) internal(ctx context.Context, doing string, err error) error {
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return status.Error(codes.Unavailable, doing+": a Latchkey service is unavailable, try again")
	}
	r.Log.ErrorContext(ctx, doing+" failed", "error", err)
	return status.Error(codes.Internal, "internal error")
}

func (r *Runs) get(ctx context.Context, runID string) (*schedulerv1.RunRecord, error) {
	proj, err := r.project(ctx)
	if err != nil {
		return nil, err
	}
	if err := bus.CheckToken(runID); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "run_id: %v", err)
	}
	rec, _, err := r.Store.Get(ctx, proj, runID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "run %q not found in this project", runID)
	}
	if err != nil {
		return nil, r.internal(ctx, "reading run", err)
	}
	return rec, nil
}

// GetRun returns one Run.
func (r *Runs) GetRun(ctx context.Context, req *latchkeyv1.GetRunRequest) (*latchkeyv1.GetRunResponse, error) {
	rec, err := r.get(ctx, req.GetRunId())
	if err != nil {
		return nil, err
	}
	return &latchkeyv1.GetRunResponse{Run: rec.GetRun()}, nil
}

// CancelRun cancels a Run that has not ended.
func (r *Runs) CancelRun(ctx context.Context, req *latchkeyv1.CancelRunRequest) (*latchkeyv1.CancelRunResponse, error) {
	rec, err := r.get(ctx, req.GetRunId())
	if err != nil {
		return nil, err
	}
	run := rec.GetRun()
	if err := r.Orch.Cancel(ctx, run.GetProjectId(), run.GetId()); err != nil {
		return nil, r.internal(ctx, "canceling run", err)
	}
	rec, err = r.get(ctx, req.GetRunId())
	if err != nil {
		return nil, err
	}
	return &latchkeyv1.CancelRunResponse{Run: rec.GetRun()}, nil
}

// ResumeRun answers a Run that asked for more information.
func (r *Runs) ResumeRun(ctx context.Context, req *latchkeyv1.ResumeRunRequest) (*latchkeyv1.ResumeRunResponse, error) {
	rec, err := r.get(ctx, req.GetRunId())
	if err != nil {
		return nil, err
	}
	run := rec.GetRun()
	if run.GetState() != latchkeyv1.RunState_RUN_STATE_REQUESTED_MORE_INFO {
		return nil, status.Errorf(codes.FailedPrecondition, "run %q is %s, not waiting for more information", run.GetId(), strings.TrimPrefix(run.GetState().String(), "RUN_STATE_"))
	}
	field := run.GetMoreInfo().GetField()
	if field != "" && req.GetAnswers()[field] == "" {
		return nil, status.Errorf(codes.InvalidArgument, "answers must include %q (%s)", field, run.GetMoreInfo().GetPrompt())
	}
	if len(req.GetAnswers()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "answers are empty")
	}
	updated, err := r.Orch.Resume(ctx, run.GetProjectId(), run.GetId(), req.GetAnswers())
	if err != nil {
		return nil, r.internal(ctx, "resuming run", err)
	}
	return &latchkeyv1.ResumeRunResponse{Run: updated}, nil
}
