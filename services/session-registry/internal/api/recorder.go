package api

import (
	"context"
	"net/url"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/services/session-registry/internal/errs"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

// RecordVerifyTime is what a RECORD Run is given beyond the recorder URL's life: the
// check of the captured state in a fresh browser context after the person finished
// at the last moment.
const RecordVerifyTime = 2 * time.Minute

func (a AuthSessions) recorderURL(ctx context.Context, st *store.Store, req *latchkeyv1.CreateRecorderUrlRequest) (*latchkeyv1.CreateRecorderUrlResponse, error) {
	project, err := callerProject(ctx)
	if err != nil {
		return nil, err
	}
	sess, err := st.GetSession(ctx, project, req.GetAuthSessionId())
	if err != nil {
		return nil, err
	}
	s := sess.Rec.GetSession()
	if s.GetType() != latchkeyv1.SessionType_SESSION_TYPE_RECORDER {
		return nil, errs.New(errs.ErrPrecondition, "auth session %q is a %s session, which logs in by itself; only RECORDER sessions are logged in by a person through the recorder",
			s.GetId(), typeName(s.GetType()))
	}
	if err := checkRecorderSettings(s.GetRecorder()); err != nil {
		return nil, err
	}
	if a.d.Recorder == nil {
		return nil, errs.New(errs.ErrUnavailable, "the recorder is not available in this registry")
	}
	ttl := a.d.Recorder.TTL()
	a.cancelRecordings(ctx, project, s.GetId())
	runID, err := a.startRun(ctx, project, &latchkeyv1.StartRunRequest{
		Api: recipe.CheckAPI, AuthSessionId: s.GetId(), Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD,
		Options: &latchkeyv1.RunOptions{Timeout: durationpb.New(ttl + RecordVerifyTime)},
	})
	if err != nil {
		return nil, err
	}
	expire := time.Now().Add(ttl)
	u, err := a.d.Recorder.URL(project, s.GetId(), runID, expire)
	if err != nil {
		return nil, err
	}
	// The URL is a capability: it is never logged.
	a.d.Log.InfoContext(ctx, "recorder url created", "project_id", project, "auth_session_id", s.GetId(), "run_id", runID, "expire_time", expire)
	return &latchkeyv1.CreateRecorderUrlResponse{RecorderUrl: u, ExpireTime: timestamppb.New(expire), RecordRunId: runID}, nil
}

// cancelRecordings cancels the session's recordings that have not ended: a new URL
// replaces the old ones, whose Runs would otherwise each hold a runner's browser until
// they expire. Best effort: a recording it misses ends at its own deadline.
func (a AuthSessions) cancelRecordings(ctx context.Context, project, session string) {
	pctx := server.ForProject(ctx, project)
	resp, err := a.d.Runs.ListRuns(pctx, &latchkeyv1.ListRunsRequest{
		AuthSessionId: session, Kinds: []latchkeyv1.RunKind{latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD},
		States: []latchkeyv1.RunState{latchkeyv1.RunState_RUN_STATE_QUEUED, latchkeyv1.RunState_RUN_STATE_RUNNING}, PageSize: 50,
	})
	if err != nil {
		a.d.Log.WarnContext(ctx, "listing the session's earlier recordings failed", "auth_session_id", session, "error", err)
		return
	}
	for _, run := range resp.GetRuns() {
		if _, err := a.d.Runs.CancelRun(pctx, &latchkeyv1.CancelRunRequest{RunId: run.GetId()}); err != nil {
			a.d.Log.WarnContext(ctx, "canceling an earlier recording failed", "run_id", run.GetId(), "error", err)
		}
	}
}

// checkRecorderSettings refuses a RECORDER session the recorder cannot open.
func checkRecorderSettings(r *latchkeyv1.RecorderSettings) error {
	u, err := url.Parse(r.GetStartUrl())
	if r.GetStartUrl() == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errs.New(errs.ErrPrecondition, "the session's recorder.start_url must be the http(s) URL of the login page: set it with `latchkey sessions update ID -start-url URL`")
	}
	return nil
}

func typeName(t latchkeyv1.SessionType) string {
	switch t {
	case latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS:
		return "CREDENTIALS"
	case latchkeyv1.SessionType_SESSION_TYPE_RUNTIME:
		return "RUNTIME"
	case latchkeyv1.SessionType_SESSION_TYPE_RECORDER:
		return "RECORDER"
	}
	return t.String()
}
