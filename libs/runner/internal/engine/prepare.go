package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/chrome"
	"github.com/latchkey/latchkey/libs/runner/internal/interp"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/storagestate"
)

// program is what runs for one API: a registered Go handler or a bundle's recipe.
type program struct {
	api     string
	handler sdk.Handler
	recipe  *recipe.API
	vars    map[string]string
}

// program finds the handler or recipe of api for task.
func (r *Runner) program(ctx context.Context, task *runnerv1.RunnerTask, api string) (*program, error) {
	vars, err := r.vars.get(ctx, task.GetProjectId(), task.GetSession().GetAuthSessionId())
	if err != nil {
		return nil, err
	}
	if h := r.handler(api); h != nil {
		return &program{api: api, handler: h, vars: maps.Clone(vars)}, nil
	}
	b, version, err := r.bundles.get(ctx, task.GetProjectId(), task.GetBundleVersion())
	if err != nil {
		return nil, err
	}
	a := b.APIs[api]
	if a == nil {
		return nil, sdk.Fail(reasonScript, "bundle version %d has no API %q; deploy a bundle that defines it", version, api)
	}
	merged := maps.Clone(b.Vars)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, vars)
	return &program{api: api, recipe: a, vars: merged}, nil
}

// credentials fetches a create's credentials: a vault secret, or runtime credentials
// the vault sealed for the Run they were passed with.
func (r *Runner) credentials(ctx context.Context, task *runnerv1.RunnerTask) (sdk.Credentials, error) {
	ref := task.GetCredentials()
	if r.deps.Vault == nil || ref == nil {
		return sdk.Credentials{}, nil
	}
	switch {
	case ref.GetSecretId() != "":
		fields, err := r.deps.Vault.Secret(ctx, task.GetProjectId(), ref.GetSecretId(), task.GetRunId())
		if err != nil {
			return nil, err
		}
		return sdk.Credentials(fields), nil
	case len(ref.GetCiphertext()) > 0:
		runID := cmp.Or(ref.GetCiphertextRunId(), task.GetRunId())
		plain, err := r.deps.Vault.Open(ctx, sdk.Sealed{Project: task.GetProjectId(), Kind: "runtime_credentials", ID: runID}, ref.GetCiphertext(), task.GetRunId())
		if err != nil {
			return nil, err
		}
		fields, err := decodeFields(plain)
		if err != nil {
			return nil, sdk.Fail(reasonScript, "the runtime credentials are not a JSON object of strings")
		}
		return sdk.Credentials(fields), nil
	}
	return sdk.Credentials{}, nil
}

// decodeFields decodes a sealed JSON object of strings (runtime credentials, resume
// answers).
func decodeFields(b []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.New("not a JSON object of strings")
	}
	return m, nil
}

// acquire takes the session's warm context, or opens a new one: always for a create
// (which logs in from nothing), for fresh_context tasks and for sessionless APIs.
func (e *execution) acquire() error {
	t := e.task
	session := ""
	if id := t.GetSession().GetAuthSessionId(); id != "" {
		session = t.GetProjectId() + "/" + id
	}
	proxy := proxyOf(t.GetSession().GetProxy())
	fresh := session == "" || t.GetFreshContext() || t.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE
	if !fresh {
		if bc, ok := e.r.warmSet.Take(session, proxy.String()); ok {
			e.bc, e.warm = bc, true
			e.res.WarmContext = true
			return nil
		}
	}
	if proxy != nil && proxy.Username != "" && e.r.deps.Vault != nil {
		fields, err := e.r.deps.Vault.Secret(e.base, t.GetProjectId(), "proxy-"+t.GetSession().GetAuthSessionId(), t.GetRunId())
		if err != nil {
			return err
		}
		proxy.Password = fields["password"]
	}
	ctx, span := e.r.tracer.Start(e.base, "open browser context")
	defer span.End()
	bc, err := e.r.pool.NewContext(ctx, session, proxy)
	if err != nil {
		span.SetStatus(codes.Error, "open failed")
		if c := sdk.CauseOf(e.base); c != nil && e.base.Err() != nil {
			return c
		}
		return err
	}
	e.bc = bc
	bc.TakeVisited()
	return nil
}

func proxyOf(p *latchkeyv1.Proxy) *chrome.Proxy {
	if p.GetServer() == "" {
		return nil
	}
	return &chrome.Proxy{Server: p.GetServer(), Username: p.GetUsername(), Password: p.GetPassword()}
}

// prepareState puts the state the task starts from into the context: the candidate of
// a verifying check, or the session's revision — skipped when a warm context already
// holds it, refreshed in place when the warm context holds an older one.
func (e *execution) prepareState(tab context.Context) error {
	t, bc := e.task, e.bc
	e.state = bc.State
	if t.GetKind() == runnerv1.TaskKind_TASK_KIND_CREATE || bc.Session() == "" {
		return nil
	}
	sealed := sdk.Sealed{Project: t.GetProjectId(), Kind: storagestate.CryptoKind, ID: t.GetSession().GetAuthSessionId()}
	var cipher []byte
	rev := t.GetSession().GetStateRevision()
	switch {
	case len(t.GetCandidateStateCiphertext()) > 0:
		cipher, rev = t.GetCandidateStateCiphertext(), 0
	case rev == 0:
		if e.warm && bc.Revision == 0 && bc.State != nil {
			return nil
		}
		return e.restore(tab, &latchkeyv1.StorageState{}, [32]byte{}, 0)
	case e.warm && bc.Revision == rev:
		return nil
	default:
		if e.r.deps.States == nil {
			return sdk.Fail(reasonScript, "this runner cannot read stored states")
		}
		c, got, err := e.r.deps.States.StorageState(e.base, t.GetProjectId(), t.GetSession().GetAuthSessionId(), rev)
		if errors.Is(err, sdk.ErrRevisionGone) {
			// Write-backs moved past the task's revision while it waited: use the newest.
			c, got, err = e.r.deps.States.StorageState(e.base, t.GetProjectId(), t.GetSession().GetAuthSessionId(), 0)
		}
		if err != nil {
			return err
		}
		cipher, rev = c, got
		e.res.BaseStateRevision = got
	}
	digest := digestOf(cipher)
	if e.warm && bc.State != nil && bc.Digest == digest {
		// The newer revision is the state this context wrote back: nothing to restore.
		bc.Revision = rev
		return nil
	}
	if e.r.deps.Vault == nil {
		return sdk.Fail(reasonScript, "this runner cannot open stored states")
	}
	plain, err := e.r.deps.Vault.Open(e.base, sealed, cipher, t.GetRunId())
	if err != nil {
		return err
	}
	st, err := storagestate.Unmarshal(plain)
	if err != nil {
		return sdk.Fail(reasonScript, "the stored state cannot be read: %v", err)
	}
	return e.restore(tab, st, digest, rev)
}

// restore writes st into the context and remembers it.
func (e *execution) restore(tab context.Context, st *latchkeyv1.StorageState, digest [32]byte, rev int64) error {
	ctx, span := e.r.tracer.Start(tab, "restore state")
	defer span.End()
	span.SetAttributes(attribute.Bool("latchkey.warm_context", e.warm), attribute.Int("latchkey.cookies", len(st.GetCookies())),
		attribute.Int("latchkey.origins", len(st.GetOrigins())))
	if err := e.bc.Restore(ctx, st, e.warm); err != nil {
		span.SetStatus(codes.Error, "restore failed")
		return e.BrowserError(tab, err)
	}
	chrome.Normalize(st)
	e.bc.State, e.bc.Digest, e.bc.Revision, e.bc.Stored = st, digest, rev, nil
	e.state = st
	e.bc.TakeVisited()
	return nil
}

// runProgram runs a handler or a recipe in the task's tab, in a span named after the
// API.
func (e *execution) runProgram(tab context.Context, p *program, md interp.Mode) (out any, err error) {
	ctx, span := e.r.tracer.Start(tab, "api "+p.api)
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, "failed")
		}
		span.End()
	}()
	if p.handler != nil {
		return e.runHandler(ctx, p, md)
	}
	t := e.task
	rc := interp.Recipe{
		API: p.recipe, Mode: md, Params: t.GetParams().AsMap(), Vars: maps.Clone(p.vars),
		Session: recipe.SessionData{ID: t.GetSession().GetAuthSessionId(), ProjectID: t.GetProjectId()},
	}
	if md == interp.ModeCreate {
		rc.Credentials = e.creds
	}
	output, err := interp.Run(ctx, e, rc, interp.Options{StepTimeout: e.r.cfg.StepTimeout, Tracer: e.r.tracer, Log: e.r.log, Observer: e.observer})
	if err != nil {
		return nil, err
	}
	if len(output) == 0 {
		return nil, nil
	}
	return output, nil
}

// runHandler calls a Go handler, turning a panic into a SCRIPT_ERROR.
func (e *execution) runHandler(ctx context.Context, p *program, md interp.Mode) (out any, err error) {
	t := e.task
	params := map[string]any{}
	if t.GetParams() != nil {
		params = t.GetParams().AsMap()
	}
	task := &sdk.Task{
		ID: t.GetTaskId(), RunID: t.GetRunId(), ProjectID: t.GetProjectId(), Kind: t.GetKind(), API: p.api,
		Params: params, SessionID: t.GetSession().GetAuthSessionId(), Vars: p.vars, Attempt: int(t.GetAttempt()),
	}
	sdk.SetAsk(task, e.Ask)
	if md == interp.ModeCreate {
		task.Credentials = e.creds
	}
	defer func() {
		if v := recover(); v != nil {
			e.r.log.ErrorContext(ctx, "handler panicked", "api", p.api, "panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
			out, err = nil, sdk.Fail(reasonScript, "the handler of %s panicked", p.api)
		}
	}()
	out, err = p.handler(ctx, task)
	if err == nil {
		return out, nil
	}
	var f *sdk.Failure
	switch {
	case errors.As(err, &f), sdk.IsInfra(err):
		return nil, err
	case errors.Is(err, sdk.ErrLoggedOut):
		return nil, sdk.WithCause(&sdk.Failure{Reason: reasonScript, Message: "the check says the state is not logged in", Outcome: outcomeInvalid}, err)
	case ctx.Err() != nil:
		return nil, sdk.CauseOf(ctx)
	case e.BrowserGone():
		return nil, sdk.Infra("handler %s: %w", p.api, err)
	}
	return nil, sdk.WithCause(&sdk.Failure{Reason: reasonScript, Message: fmt.Sprintf("the handler of %s failed: %.512s", p.api, err.Error())}, err)
}

// checkOutcome is what a check answers when it ended with err.
func checkOutcome(err error) latchkeyv1.CheckOutcome {
	var f *sdk.Failure
	switch {
	case err == nil:
		return outcomeValid
	case errors.Is(err, sdk.ErrLoggedOut):
		return outcomeInvalid
	case errors.As(err, &f) && f.Outcome != latchkeyv1.CheckOutcome_CHECK_OUTCOME_UNSPECIFIED:
		return f.Outcome
	}
	return outcomeInconclusive
}
