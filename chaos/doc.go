// Package chaos is Latchkey's chaos suite (issue 13): real processes, killed with
// SIGKILL under load, and what users must still see afterwards.
//
// Its tests start what a multi-machine deployment runs, each as its own process on
// random loopback ports: three nats-server nodes forming a JetStream cluster, a private
// redis-server, the demo portal, and `latchkey serve` for the registry, the vault, two
// schedulers and two runners (every one with LATCHKEY_NATS_URL naming the three nodes
// and LATCHKEY_NATS_REPLICAS=3). The binaries are built once per test binary (TestMain),
// nats-server through the tools module (scripts/tools) at the version go.mod pins.
// Every process writes its output to a log file in the test's artifact directory
// (kept with `go test -artifacts`); a failing test prints the end of each.
//
// The tests are behind the `chaos` build tag, so `go test ./...` leaves them out;
// `make chaos` runs them (and .ci/run calls it):
//
//	go test -tags chaos -race -count=1 -v ./chaos/
//
// # The clients
//
// The suite submits Runs the two ways a user can: gRPC StartRun (to both schedulers,
// round robin, as behind a load balancer) and a RunRequest published on
// lk.runs.requests.<project>. Each Run carries an idempotency key (and, on NATS, the same
// value as Nats-Msg-Id and as its run id), so a retried submission never starts a
// second Run. The clients retry as a well-behaved client of any service does:
//
//   - StartRun: each attempt has a 10 s deadline; Unavailable and DeadlineExceeded are
//     retried with the same idempotency key after an exponential back-off with full
//     jitter (100 ms doubling to 2 s); any other error is final. After two minutes of
//     retrying the submission counts as failed.
//   - NATS intake: a publish whose JetStream ack does not come (timeout, no responders
//     while a node restarts) is published again with the same Nats-Msg-Id, on the same
//     back-off and budget.
//   - Watching: WatchRun until the Run ends; a broken stream (its scheduler killed) or
//     NotFound (a NATS request the intake has not taken yet) is watched again after the
//     same back-off. A Run is never started again by the test: a Run that FAILED
//     stays failed and is reported.
//
// No deadline depends on the machine's speed: the watch fails only when no Run at all
// has ended for a few minutes (a stall), and each Run has its own server-side timeout.
package chaos
