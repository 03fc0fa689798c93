package orch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/domain"
	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/services/scheduler/internal/store"
)

// Limits of Start, each refused with errs.ErrInvalid when exceeded.
const (
	DefaultTimeout    = 5 * time.Minute
	MaxTimeout        = time.Hour
	MaxCheckAttempts  = 10
	MaxCreateAttempts = 5
	MaxRetries        = 5
	MaxParamsBytes    = 256 << 10
	MaxIdempotencyKey = 128
)

// bundleTTL bounds how long a deploy takes to reach Start's API check.
const bundleTTL = 2 * time.Second

type cachedBundle struct {
	version int64
	apis    map[string]bool
	expires time.Time
}

// StartOptions say who starts a Run and how it is named.
type StartOptions struct {
	// Internal callers (Latchkey's own services) may start AuthSession Runs.
	Internal bool
	// RunID names the new Run (NATS publishers and Jobs choose it); empty: a new id.
	RunID string
	// JobRunID marks the Run as a child of that JobRun.
	JobRunID string
	// EventsJSON mirrors the Run's events in JSON (a NATS request that asked for it).
	EventsJSON bool
}

// Start validates a Run and queues it: the request's limits, the AuthSession rules
// (DESIGN.md section 3: no Run on an EXPIRED session but the ones that fix it,
// credentials only for RUNTIME sessions), the deployed API, the idempotency key; then
// it stores the Run's record and dispatches its first step. The gRPC API, the NATS
// intake and Jobs all start Runs here. Refusals are errs Errors (see errors.go).
func (o *Orchestrator) Start(ctx context.Context, project string, req *latchkeyv1.StartRunRequest, opt StartOptions) (*latchkeyv1.Run, error) {
	if err := validateStart(req, opt.Internal); err != nil {
		return nil, err
	}
	runID := opt.RunID
	if runID == "" {
		runID = NewID("run")
	} else if err := bus.CheckToken(runID); err != nil {
		return nil, invalid("run_id: %v", err)
	}
	ctx = logging.WithRun(ctx, runID, req.GetAuthSessionId(), project)
	var sess *latchkeyv1.AuthSession
	if id := req.GetAuthSessionId(); id != "" {
		var err error
		if sess, err = o.session(ctx, project, id); err != nil {
			if errors.Is(err, errs.ErrNotFound) || errors.Is(err, errs.ErrInvalid) {
				return nil, sessionNotFound(id)
			}
			return nil, err
		}
		if err := checkSession(req, sess); err != nil {
			return nil, err
		}
	}
	kind := req.GetKind()
	if kind == latchkeyv1.RunKind_RUN_KIND_UNSPECIFIED {
		kind = latchkeyv1.RunKind_RUN_KIND_API
	}
	site, err := runSite(req, sess)
	if err != nil {
		return nil, err
	}
	version, err := o.BundleVersion(ctx, project, site, req.GetApi())
	if err != nil {
		return nil, err
	}
	if key := req.GetIdempotencyKey(); key != "" {
		existing, fresh, err := o.Store.ClaimIdempotencyKey(ctx, project, key, runID)
		if err != nil {
			return nil, fmt.Errorf("claiming idempotency key: %w", err)
		}
		if !fresh {
			rec, _, err := o.Store.Get(ctx, project, existing)
			switch {
			case err == nil:
				return rec.GetRun(), nil
			case !errors.Is(err, store.ErrNotFound):
				return nil, fmt.Errorf("reading the idempotent run: %w", err)
			case existing == runID:
				// This Run's own earlier try claimed the key and stopped before storing
				// it (a scheduler that died, a store whose answer was lost): go on.
			default:
				// The claim has no Run: its claimer died, or is storing it right now.
				err := o.Store.TakeOverIdempotencyKey(ctx, project, key, existing, runID, o.Policy.IdempotencyOrphanAfter)
				if errors.Is(err, store.ErrKeyBeingClaimed) {
					return nil, errs.New(errs.ErrUnavailable, "a Run with this idempotency key is being started; try again")
				}
				if err != nil {
					return nil, err
				}
			}
		}
	}
	timeout := DefaultTimeout
	if d := req.GetOptions().GetTimeout(); d != nil {
		timeout = d.AsDuration()
	}
	now := o.now()
	rec := &schedulerv1.RunRecord{
		Deadline:     timestamppb.New(now.Add(timeout)),
		TraceContext: o.traceContext(ctx),
		EventsJson:   opt.EventsJSON,
		Run: &latchkeyv1.Run{
			Id: runID, ProjectId: project, Kind: kind, State: latchkeyv1.RunState_RUN_STATE_QUEUED, Api: req.GetApi(),
			Params: req.GetParams(), AuthSessionId: req.GetAuthSessionId(), Options: req.GetOptions(),
			BundleVersion: version, Site: site, CreateTime: timestamppb.New(now), IdempotencyKey: req.GetIdempotencyKey(),
			TraceId: trace.SpanContextFromContext(ctx).TraceID().String(), JobRunId: opt.JobRunID,
		},
	}
	if len(req.GetCredentials()) > 0 {
		if err := o.SealRuntimeCredentials(ctx, project, runID, req.GetCredentials(), timeout+time.Minute); err != nil {
			o.releaseKey(ctx, project, req)
			return nil, err
		}
		rec.RuntimeCredentialsCached = true
	}
	// A Run on a READY session is stored already dispatched: one KV write, where a
	// queued record and then its dispatch took two writes and two reads on the path
	// every warm Run takes.
	var task *runnerv1.RunnerTask
	if kind == latchkeyv1.RunKind_RUN_KIND_API && sess.GetState() == latchkeyv1.SessionState_SESSION_STATE_READY {
		if task, err = o.prepareAPITask(ctx, rec, sess, nextAttempt); err != nil {
			o.releaseKey(ctx, project, req)
			return nil, fmt.Errorf("storing the check's run: %w", err)
		}
		markDispatched(rec, task, nextAttempt)
	}
	if err := o.Store.Create(ctx, rec); err != nil {
		o.releaseKey(ctx, project, req)
		o.finishChild(ctx, project, task.GetCheckRunId(), latchkeyv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED, "the Run could not be stored")
		return nil, fmt.Errorf("storing run: %w", err)
	}
	if task != nil {
		queued := proto.CloneOf(rec)
		queued.Run.State, queued.Run.StartTime = latchkeyv1.RunState_RUN_STATE_QUEUED, nil
		o.emit(ctx, queued, "queued")
		if err := o.publishAPITask(ctx, rec, task); err != nil {
			// The Run is stored as dispatched; the sweep sends its task again.
			o.Log.WarnContext(ctx, "dispatching run failed; the sweep will retry", "run_id", runID, "error", err)
		}
		return rec.GetRun(), nil
	}
	o.emit(ctx, rec, "queued")
	if err := o.Begin(ctx, rec); err != nil && !ErrStale(err) {
		// The Run is stored; the sweep dispatches it again.
		o.Log.WarnContext(ctx, "dispatching run failed; the sweep will retry", "run_id", runID, "error", err)
	}
	if got, _, err := o.Store.Get(ctx, project, runID); err == nil {
		return got.GetRun(), nil
	}
	return rec.GetRun(), nil
}

func (o *Orchestrator) releaseKey(ctx context.Context, project string, req *latchkeyv1.StartRunRequest) {
	if req.GetIdempotencyKey() != "" {
		o.Store.ReleaseIdempotencyKey(ctx, project, req.GetIdempotencyKey())
	}
}

// checkSession refuses Runs a session cannot serve.
func checkSession(req *latchkeyv1.StartRunRequest, sess *latchkeyv1.AuthSession) error {
	// Updating credentials and recording a login are how an EXPIRED session is fixed.
	fixes := req.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE || req.GetKind() == latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD
	if sess.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED && !fixes {
		return sessionExpired(sess, "starting Runs")
	}
	if len(req.GetCredentials()) > 0 && sess.GetType() != latchkeyv1.SessionType_SESSION_TYPE_RUNTIME {
		return invalid("credentials are passed with Runs only for RUNTIME sessions; auth session %q is %s", sess.GetId(), strings.TrimPrefix(sess.GetType().String(), "SESSION_TYPE_"))
	}
	return nil
}

// runSite is the site whose bundle a Run executes: its session's, else the request's.
func runSite(req *latchkeyv1.StartRunRequest, sess *latchkeyv1.AuthSession) (string, error) {
	if err := domain.CheckSite(req.GetSite()); err != nil {
		return "", invalid("%v", err)
	}
	if sess == nil {
		return domain.Site(req.GetSite()), nil
	}
	site := domain.Site(sess.GetSite())
	if req.GetSite() != "" && domain.Site(req.GetSite()) != site {
		return "", invalid("auth session %q belongs to site %q, not %q: leave site empty, or name a session of that site", sess.GetId(), site, req.GetSite())
	}
	return site, nil
}

// BundleVersion returns the newest deployed version of the site's bundle that has
// api. It is cached for bundleTTL per project and site.
func (o *Orchestrator) BundleVersion(ctx context.Context, project, site, api string) (int64, error) {
	site = domain.Site(site)
	key := project + "/" + site
	if v, ok := o.bundles.Load(key); ok && o.now().Before(v.(cachedBundle).expires) {
		if b := v.(cachedBundle); b.apis[api] {
			return b.version, nil
		}
	}
	resp, err := o.Registry.GetBundle(ctx, &registryv1.GetBundleRequest{ProjectId: project, Site: site})
	if err = errs.FromStatus(err); errors.Is(err, errs.ErrNotFound) {
		return 0, errs.New(errs.ErrPrecondition, "no automations are deployed to %s: deploy a bundle first (`%s`)", domain.SiteOf("", site), domain.DeployCommand(site)).WithCause(ErrNoBundle)
	}
	if err != nil {
		return 0, fmt.Errorf("reading bundle: %w", err)
	}
	b := cachedBundle{version: resp.GetBundle().GetVersion(), apis: map[string]bool{}, expires: o.now().Add(bundleTTL)}
	for _, a := range resp.GetBundle().GetAutomations() {
		b.apis[a.GetName()] = true
	}
	o.bundles.Store(key, b)
	if !b.apis[api] {
		return 0, errs.New(errs.ErrNotFound, "no API named %q in version %d of site %q's bundle", api, b.version, site).WithCause(ErrAPINotFound)
	}
	return b.version, nil
}

func validateStart(req *latchkeyv1.StartRunRequest, internal bool) error {
	switch kind := req.GetKind(); kind {
	case latchkeyv1.RunKind_RUN_KIND_UNSPECIFIED, latchkeyv1.RunKind_RUN_KIND_API:
	case latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_CREATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_UPDATE, latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD:
		if !internal {
			return errs.New(errs.ErrDenied, "AuthSession Runs are started by Latchkey itself: create the session or update its credentials instead")
		}
		if req.GetAuthSessionId() == "" {
			return invalid("auth_session_id is required for AuthSession Runs")
		}
	default:
		return invalid("kind %s cannot be started with StartRun", kind)
	}
	if req.GetApi() == "" {
		return invalid("api is required: the name of a deployed automation, for example list-invoices")
	}
	o := req.GetOptions()
	switch {
	case o.GetCheckAttempts() < 0 || o.GetCheckAttempts() > MaxCheckAttempts:
		return invalid("options.check_attempts must be between 1 and %d", MaxCheckAttempts)
	case o.GetCreateAttempts() < 0 || o.GetCreateAttempts() > MaxCreateAttempts:
		return invalid("options.create_attempts must be between 1 and %d", MaxCreateAttempts)
	case o.GetRetries() < 0 || o.GetRetries() > MaxRetries:
		return invalid("options.retries must be between 0 and %d", MaxRetries)
	case o.GetTimeout() != nil && (o.GetTimeout().AsDuration() <= 0 || o.GetTimeout().AsDuration() > MaxTimeout):
		return invalid("options.timeout must be between 0 and %s", MaxTimeout)
	case o.GetValidationFreshness() != nil && o.GetValidationFreshness().AsDuration() < 0:
		return invalid("options.validation_freshness must not be negative")
	case proto.Size(req.GetParams()) > MaxParamsBytes:
		return invalid("params are %d bytes, at most %d are allowed", proto.Size(req.GetParams()), MaxParamsBytes)
	case len(req.GetIdempotencyKey()) > MaxIdempotencyKey:
		return invalid("idempotency_key is longer than %d characters", MaxIdempotencyKey)
	}
	if len(req.GetCredentials()) > 0 && req.GetAuthSessionId() == "" {
		return invalid("credentials need an auth_session_id (a RUNTIME session)")
	}
	return nil
}

// ValidateRunOptions checks a Run request as Start would before it touches anything:
// Jobs check their run options with it when they are created.
func ValidateRunOptions(req *latchkeyv1.StartRunRequest) error { return validateStart(req, false) }

// StartChild starts a child Run of a JobRun, as Start does. A refusal a user must fix
// (the API is no longer deployed, the session is EXPIRED or gone) is stored as an ended
// Run with the refusal's message, so ListRuns with the JobRun's id shows why; the
// refusal is returned (errors.Is ErrSessionExpired for an EXPIRED session).
func (o *Orchestrator) StartChild(ctx context.Context, project string, req *latchkeyv1.StartRunRequest, runID, jobRunID string) error {
	_, err := o.Start(ctx, project, req, StartOptions{RunID: runID, JobRunID: jobRunID})
	if !Refused(err) {
		return err
	}
	now := timestamppb.New(o.now())
	run := &latchkeyv1.Run{
		Id: runID, ProjectId: project, Kind: latchkeyv1.RunKind_RUN_KIND_API, State: latchkeyv1.RunState_RUN_STATE_FAILED,
		Api: req.GetApi(), Params: req.GetParams(), AuthSessionId: req.GetAuthSessionId(), Options: req.GetOptions(),
		JobRunId: jobRunID, FailureMessage: err.Error(), CreateTime: now, EndTime: now,
	}
	if errors.Is(err, ErrSessionExpired) {
		run.State, run.FailureReason = latchkeyv1.RunState_RUN_STATE_CANCELED, latchkeyv1.FailureReason_FAILURE_REASON_AUTH_SESSION_EXPIRED
	}
	if rec := (&schedulerv1.RunRecord{Run: run, Stage: schedulerv1.Stage_STAGE_DONE}); o.Store.Create(ctx, rec) == nil {
		o.emit(ctx, rec, "rejected")
	}
	return err
}

// RunState returns the state of a Run; found is false when it has no record.
func (o *Orchestrator) RunState(ctx context.Context, project, runID string) (latchkeyv1.RunState, bool, error) {
	rec, _, err := o.Store.Get(ctx, project, runID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return rec.GetRun().GetState(), true, nil
}

// Get returns a Run's record; ErrRunNotFound (an errs NotFound) when the project has
// no such Run.
func (o *Orchestrator) Get(ctx context.Context, project, runID string) (*schedulerv1.RunRecord, error) {
	if err := bus.CheckToken(runID); err != nil {
		return nil, invalid("run_id: %v", err)
	}
	rec, _, err := o.Store.Get(ctx, project, runID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, runNotFound(runID)
	}
	return rec, err
}

// EmitRejected tells a NATS publisher that named its Run why the request was dropped:
// a FAILED Run event on the Run's subject (no record is stored).
func (o *Orchestrator) EmitRejected(ctx context.Context, project, runID, api, why string, json bool) {
	if runID == "" || !bus.ValidToken(runID) {
		return
	}
	o.emit(ctx, &schedulerv1.RunRecord{EventsJson: json, Run: &latchkeyv1.Run{
		Id: runID, ProjectId: project, State: latchkeyv1.RunState_RUN_STATE_FAILED, Api: api,
		FailureMessage: why, EndTime: timestamppb.New(o.now()),
	}}, "rejected")
}

// CheckSession refuses work on a session the project does not have
// (ErrSessionNotFound) or that is EXPIRED (ErrSessionExpired, with reason
// AUTH_SESSION_EXPIRED); before says what the caller was about to do ("resuming the
// job"). Jobs check their session with it before they are created, resumed or fired.
func (o *Orchestrator) CheckSession(ctx context.Context, project, id, before string) (*latchkeyv1.AuthSession, error) {
	sess, err := o.session(ctx, project, id)
	if errors.Is(err, errs.ErrNotFound) || errors.Is(err, errs.ErrInvalid) {
		return nil, sessionNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	if sess.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED {
		return nil, sessionExpired(sess, before)
	}
	return sess, nil
}
