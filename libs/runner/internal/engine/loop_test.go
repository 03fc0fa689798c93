package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/examples/portal/portaltest"
	"github.com/latchkey/latchkey/libs/bus"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	schedulerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/scheduler/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
	"github.com/latchkey/latchkey/libs/testkit"
)

var slowFile = recipe.File{Path: "slow.yaml", Content: []byte(`
apis:
  slow:
    steps:
      - sleep: "{{ .Params.for }}"
`)}

func init() {
	// sleep takes a literal duration; slow-* APIs have fixed ones.
	slowFile.Content = []byte(`
apis:
  slow-20s:
    steps:
      - goto: "data:text/html,<p id=x>slow</p>"
      - sleep: 20s
  slow-2s:
    steps:
      - goto: "data:text/html,<p id=x>slow</p>"
      - sleep: 2s
      - extract: { as: text, selector: "#x" }
`)
}

// publishTask sends a task to the runners of pool "test".
func publishTask(t *testing.T, js jetstream.JetStream, tk *runnerv1.RunnerTask) {
	publishTaskB(t, js, tk)
}

func publishTaskB(t testing.TB, js jetstream.JetStream, tk *runnerv1.RunnerTask) {
	t.Helper()
	b, err := proto.Marshal(tk)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := bus.TaskSubject("test")
	if _, err := js.PublishMsg(t.Context(), bus.NewMsg(t.Context(), bus.Propagator(), subj, b, tk.GetTaskId())); err != nil {
		t.Fatal(err)
	}
}

// resultsOf returns a func that waits for the next result of a Run.
func resultsOf(t *testing.T, js jetstream.JetStream, runID string) func(time.Duration) *runnerv1.TaskResult {
	t.Helper()
	next := resultsOfB(t, js, runID)
	return func(wait time.Duration) *runnerv1.TaskResult {
		t.Helper()
		res, err := next(wait)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
}

func resultsOfB(t testing.TB, js jetstream.JetStream, runID string) func(time.Duration) (*runnerv1.TaskResult, error) {
	t.Helper()
	subj, _ := bus.ResultSubject(runID)
	cons, err := js.CreateConsumer(t.Context(), bus.StreamResults, jetstream.ConsumerConfig{FilterSubject: subj, AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return func(wait time.Duration) (*runnerv1.TaskResult, error) {
		msg, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err != nil {
			return nil, fmt.Errorf("no result for %s within %s: %w", runID, wait, err)
		}
		_ = msg.Ack()
		var res runnerv1.TaskResult
		if err := proto.Unmarshal(msg.Data(), &res); err != nil {
			return nil, err
		}
		if msg.Headers().Get("traceparent") == "" {
			return nil, errors.New("the result carries no trace context")
		}
		return &res, nil
	}
}

func startRunner(t *testing.T, r *Runner) {
	t.Helper()
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// waitRunning waits until r runs a task of runID.
func waitRunning(t *testing.T, r *Runner, runID string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r.mu.Lock()
		e := r.running[runID]
		r.mu.Unlock()
		if e != nil {
			return
		}
	}
	t.Fatalf("run %s never started", runID)
}

// TestCancelWithinASecond: lk.cancel.<run> aborts a running task, which answers
// CANCELED within a second.
func TestCancelWithinASecond(t *testing.T) {
	t.Parallel()
	_, nc, js := testkit.NATS(t)
	b := newTestBackend(t, []recipe.File{slowFile})
	r := newTestRunner(t, Config{}, b, Deps{JS: js})
	startRunner(t, r)
	tk := task(runnerv1.TaskKind_TASK_KIND_API, "slow-20s", project, "", 0, nil)
	next := resultsOf(t, js, tk.GetRunId())
	publishTask(t, js, tk)
	waitRunning(t, r, tk.GetRunId())
	time.Sleep(200 * time.Millisecond)
	subj, _ := bus.CancelSubject(tk.GetRunId())
	start := time.Now()
	if err := nc.Publish(subj, nil); err != nil {
		t.Fatal(err)
	}
	res := next(5 * time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("the cancel took %s", took)
	}
	if res.GetStatus() != statusCanceled {
		t.Errorf("status %s (%s), want CANCELED", res.GetStatus(), res.GetFailureMessage())
	}
}

// TestAskAnsweredOverNATS: carol's login asks for the emailed code; the answer comes
// sealed on lk.resume.<run> and the login goes on in the same context.
func TestAskAnsweredOverNATS(t *testing.T) {
	t.Parallel()
	p, base := portaltest.Start(t, portal.Config{})
	_, nc, js := testkit.NATS(t)
	b := newTestBackend(t, portalBundle(t))
	b.vars[project+"/sc"] = map[string]string{"baseURL": base}
	b.secrets[project+"/session-sc"] = map[string]string{"username": "carol", "password": portal.CarolPassword}
	r := newTestRunner(t, Config{}, b, Deps{JS: js})
	startRunner(t, r)
	tk := task(runnerv1.TaskKind_TASK_KIND_CREATE, recipe.CreateAPI, project, "sc", 0, nil)
	tk.Credentials = &runnerv1.CredentialsRef{Source: &runnerv1.CredentialsRef_SecretId{SecretId: "session-sc"}}
	next := resultsOf(t, js, tk.GetRunId())
	publishTask(t, js, tk)
	asked := next(20 * time.Second)
	if asked.GetStatus() != statusMoreInfo || asked.GetMoreInfo().GetField() != "email_code" || asked.GetMoreInfo().GetExpireTime() == nil {
		t.Fatalf("first result %s %v, want REQUESTED_MORE_INFO for email_code", asked.GetStatus(), asked.GetMoreInfo())
	}
	code, ok := p.LastCode("carol")
	if !ok {
		t.Fatal("the portal sent carol no code")
	}
	plain, _ := json.Marshal(map[string]string{"email_code": code})
	sealed, _ := b.Seal(context.Background(), sdk.Sealed{Project: project, Kind: "resume_answers", ID: tk.GetRunId()}, plain)
	msg, _ := proto.Marshal(&runnerv1.TaskResume{RunId: tk.GetRunId(), AnswersCiphertext: sealed})
	subj, _ := bus.ResumeSubject(tk.GetRunId())
	if err := nc.Publish(subj, msg); err != nil {
		t.Fatal(err)
	}
	done := next(20 * time.Second)
	if done.GetStatus() != statusSucceeded || len(done.GetCapturedStateCiphertext()) == 0 {
		t.Fatalf("after the answer: %s %s", done.GetStatus(), done.GetFailureMessage())
	}
	st := b.openState(t, project, "sc", done.GetCapturedStateCiphertext())
	if code, body := apiMe(t, base, cookieValue(st, portal.SessionCookie)); code != 200 || !contains(body, "carol") {
		t.Errorf("carol's captured state: %d %s", code, body)
	}
}

// runnerDiesMidTask starts runner a (AckWait 2 s) on its own NATS server, gives it a
// 2-second task and kills it mid-task: its connection drops and the task stops,
// unacked, for JetStream to deliver again. It returns the server's URL, a JetStream
// client, the backend and the task.
func runnerDiesMidTask(t *testing.T) (string, jetstream.JetStream, *testBackend, *runnerv1.RunnerTask) {
	t.Helper()
	url, _, js := testkit.NATS(t)
	b := newTestBackend(t, []recipe.File{slowFile})
	jsA := connectTo(t, url, "runner-a")
	a := newTestRunner(t, Config{ID: "a", AckWait: 2 * time.Second}, b, Deps{JS: jsA})
	startRunner(t, a)
	tk := task(runnerv1.TaskKind_TASK_KIND_API, "slow-2s", project, "", 0, nil)
	publishTask(t, js, tk)
	waitRunning(t, a, tk.GetRunId())
	jsA.Conn().Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = a.Stop(ctx)
	return url, js, b, tk
}

// TestRedeliveredWhenRunnerDies: a runner dies mid-task without acking; after AckWait
// another runner of the pool gets the task and completes it.
func TestRedeliveredWhenRunnerDies(t *testing.T) {
	t.Parallel()
	url, js, b, tk := runnerDiesMidTask(t)
	next := resultsOf(t, js, tk.GetRunId())
	bRunner := newTestRunner(t, Config{ID: "b", AckWait: 2 * time.Second}, b, Deps{JS: connectTo(t, url, "runner-b")})
	startRunner(t, bRunner)
	res := next(20 * time.Second)
	if res.GetStatus() != statusSucceeded || res.GetRunnerId() != "b" || res.GetDelivery() != 2 {
		t.Fatalf("result %s from %q on delivery %d (%s), want SUCCEEDED from b on delivery 2", res.GetStatus(), res.GetRunnerId(), res.GetDelivery(), res.GetFailureMessage())
	}
	if got := res.GetOutput().GetStructValue().GetFields()["text"].GetStringValue(); got != "slow" {
		t.Errorf("output text %q", got)
	}
}

// TestKilledChromiumHeals: the browser is killed mid-task; that task fails TRANSIENT
// as a platform fault (the scheduler sends it again) and the next one runs on a new
// browser.
func TestKilledChromiumHeals(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, []recipe.File{slowFile})
	r, err := New(Config{Pool: "test", ChromiumPath: testkit.ChromiumPath(t)}, Deps{States: b, Vault: b, Bundles: b})
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, r)
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	pids := r.BrowserPIDs()
	tk := task(runnerv1.TaskKind_TASK_KIND_API, "slow-20s", project, "", 0, nil)
	done := make(chan *runnerv1.TaskResult, 1)
	go func() { done <- r.Execute(t.Context(), tk) }()
	waitRunning(t, r, tk.GetRunId())
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.GetStatus() != statusFailed || res.GetFailureReason() != reasonTransient || !res.GetPlatformFault() {
			t.Errorf("in-flight task: %s %s platform_fault=%v (%s), want FAILED TRANSIENT as a platform fault", res.GetStatus(), res.GetFailureReason(), res.GetPlatformFault(), res.GetFailureMessage())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight task did not end after its browser died")
	}
	res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "slow-2s", project, "", 0, nil))
	if res.GetStatus() != statusSucceeded {
		t.Fatalf("next task: %s %s", res.GetStatus(), res.GetFailureMessage())
	}
	if now := r.BrowserPIDs(); len(now) != 1 || now[0] == pids[0] {
		t.Errorf("browsers %v after killing %d", now, pids[0])
	}
}

// TestTaskGoesToTheRunnerHoldingTheWarmContext: runner b holds a session's warm
// context; runner a takes the session's next task from JetStream and hands it to b,
// which runs it warm.
func TestTaskGoesToTheRunnerHoldingTheWarmContext(t *testing.T) {
	t.Parallel()
	_, base := portaltest.Start(t, portal.Config{})
	url, _, js := testkit.NATS(t)
	be := newTestBackend(t, portalBundle(t, whoamiFile))
	be.vars[project+"/sa"] = map[string]string{"baseURL": base}
	be.putState(t, project, "sa", 1, loggedInState(t, base, portal.User{Username: "alice", Password: portal.AlicePassword}))
	connect := func(name string) jetstream.JetStream { return connectTo(t, url, name) }
	rb := newTestRunner(t, Config{ID: "b"}, be, Deps{JS: connect("runner-b")})
	startRunner(t, rb)
	first := task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", 1, nil)
	next := resultsOf(t, js, first.GetRunId())
	publishTask(t, js, first)
	if res := next(20 * time.Second); res.GetStatus() != statusSucceeded || res.GetRunnerId() != "b" {
		t.Fatalf("first task: %s on %q %s", res.GetStatus(), res.GetRunnerId(), res.GetFailureMessage())
	}
	// b stops taking tasks from JetStream but keeps its warm context and its offers.
	rb.stop()
	ra := newTestRunner(t, Config{ID: "a"}, be, Deps{JS: connect("runner-a")})
	startRunner(t, ra)
	second := task(runnerv1.TaskKind_TASK_KIND_API, "whoami", project, "sa", 1, nil)
	next = resultsOf(t, js, second.GetRunId())
	publishTask(t, js, second)
	res := next(20 * time.Second)
	if res.GetStatus() != statusSucceeded || res.GetRunnerId() != "b" || !res.GetWarmContext() {
		t.Fatalf("second task: %s on %q warm=%v %s; want it run warm on b", res.GetStatus(), res.GetRunnerId(), res.GetWarmContext(), res.GetFailureMessage())
	}
	if ra.WarmContexts() != 0 {
		t.Error("runner a opened a context of its own")
	}
}

// TestBrowserRecycled: after RecycleAfter contexts a browser is replaced.
func TestBrowserRecycled(t *testing.T) {
	t.Parallel()
	b := newTestBackend(t, []recipe.File{{Path: "q.yaml", Content: []byte("apis:\n  quick:\n    steps:\n      - goto: 'data:text/html,<p>q</p>'\n")}})
	r, err := New(Config{Pool: "test", ChromiumPath: testkit.ChromiumPath(t), RecycleAfter: 2}, Deps{States: b, Vault: b, Bundles: b})
	if err != nil {
		t.Fatal(err)
	}
	startRunner(t, r)
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	first := r.BrowserPIDs()
	for range 3 {
		if res := r.Execute(t.Context(), task(runnerv1.TaskKind_TASK_KIND_API, "quick", project, "", 0, nil)); res.GetStatus() != statusSucceeded {
			t.Fatalf("%s %s", res.GetStatus(), res.GetFailureMessage())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if now := r.BrowserPIDs(); len(now) == 1 && now[0] != first[0] {
			return
		}
	}
	t.Errorf("browsers %v, want %v replaced after 2 contexts", r.BrowserPIDs(), first)
}

// connectTo opens a runner's own NATS connection, closed when the test ends.
func connectTo(t *testing.T, url, name string) jetstream.JetStream {
	t.Helper()
	nc, js, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: url, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

// TestRedeliveredTaskAlreadyAnsweredIsNotRunAgain: a runner that dies after its result
// was taken but before its ack makes JetStream deliver the task again. When the Run's
// record no longer waits for that task, the next runner acks it without running it:
// the site does not see the API twice for one attempt.
func TestRedeliveredTaskAlreadyAnsweredIsNotRunAgain(t *testing.T) {
	t.Parallel()
	url, js, b, tk := runnerDiesMidTask(t)
	next := resultsOfB(t, js, tk.GetRunId())
	// Meanwhile the scheduler moved the Run on to another task.
	runs, err := js.KeyValue(t.Context(), bus.BucketRuns)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := proto.Marshal(&schedulerv1.RunRecord{TaskId: "task-next", Run: &latchkeyv1.Run{Id: tk.GetRunId(), ProjectId: project}})
	if _, err := runs.Put(t.Context(), bus.RunRecordKey(project, tk.GetRunId()), rec); err != nil {
		t.Fatal(err)
	}
	bRunner := newTestRunner(t, Config{ID: "b", AckWait: 2 * time.Second}, b, Deps{JS: connectTo(t, url, "runner-b")})
	startRunner(t, bRunner)
	cons, err := js.Consumer(t.Context(), bus.StreamTasks, ConsumerName("test"))
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() (bool, string) {
		info, err := cons.Info(t.Context())
		if err != nil {
			return false, err.Error()
		}
		return info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0 && info.Delivered.Consumer >= 2,
			fmt.Sprintf("task consumer: %d delivered, %d pending ack, %d pending", info.Delivered.Consumer, info.NumAckPending, info.NumPending)
	})
	if res, err := next(time.Second); err == nil {
		t.Fatalf("runner b ran the answered task again: %s from %q", res.GetStatus(), res.GetRunnerId())
	}
}
