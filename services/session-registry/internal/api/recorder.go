package api

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/server"
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
			s.GetId(), strings.TrimPrefix(s.GetType().String(), "SESSION_TYPE_"))
	}
	if err := checkRecorderSettings(s.GetRecorder()); err != nil {
		return nil, err
	}
	if a.d.Recorder == nil {
		return nil, errs.New(errs.ErrUnavailable, "the recorder is not available in this registry")
	}
	ttl := a.d.Recorder.TTL()
	a.cancelRecording(ctx, project, sess.Rec.GetRecordingRunId())
	runID, err := a.startRun(ctx, project, &latchkeyv1.StartRunRequest{
		Api: recipe.CheckAPI, AuthSessionId: s.GetId(), Kind: latchkeyv1.RunKind_RUN_KIND_AUTHSESSION_RECORD,
		Options: &latchkeyv1.RunOptions{Timeout: durationpb.New(ttl + RecordVerifyTime)},
	})
	if err != nil {
		return nil, err
	}
	if _, err := st.UpdateSession(ctx, project, s.GetId(), 0, func(rec *registryv1.SessionRecord) error {
		rec.RecordingRunId = runID
		return nil
	}); err != nil {
		// The recording runs; only the next URL's cancel of it is lost.
		a.d.Log.WarnContext(ctx, "remembering the session's recording failed", "auth_session_id", s.GetId(), "run_id", runID, "error", err)
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

// cancelRecording cancels the session's previous recording, if it has not ended: a
// new URL replaces the old one, whose Run would otherwise hold a runner's browser until
// it expired. Best effort: a recording it misses ends at its own deadline.
func (a AuthSessions) cancelRecording(ctx context.Context, project, runID string) {
	if runID == "" {
		return
	}
	_, err := a.d.Runs.CancelRun(server.ForProject(ctx, project), &latchkeyv1.CancelRunRequest{RunId: runID})
	if err = errs.FromStatus(err); err != nil && !errors.Is(err, errs.ErrPrecondition) && !errors.Is(err, errs.ErrNotFound) {
		a.d.Log.WarnContext(ctx, "canceling the session's previous recording failed", "run_id", runID, "error", err)
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
