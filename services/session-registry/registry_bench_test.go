package registry

import (
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"github.com/latchkey/latchkey/libs/cache"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	vaultv1 "github.com/latchkey/latchkey/libs/gen/latchkey/vault/v1"
	"github.com/latchkey/latchkey/libs/logging"
	"github.com/latchkey/latchkey/libs/server"
	"github.com/latchkey/latchkey/libs/testkit"
	"github.com/latchkey/latchkey/services/session-registry/internal/store"
)

const (
	benchSessions  = 10_000
	benchStateSize = 4 << 10 // a typical sealed storage state
)

// BenchmarkRegistry measures, through the internal gRPC API as the scheduler and the
// runners call it, with 10,000 sessions stored (each with a 4 KiB sealed state) over
// real NATS JetStream and a real Redis cache:
//   - GetSession of one hot session (warm) and of random sessions (cold);
//   - GetStorageState with the ciphertext in Redis (warm) and evicted first (cold);
//   - ListAuthSessions of the project, 100 per page, first and last page.
//
// Each reports p50 and p99 latency per call (µs) besides ns/op.
func BenchmarkRegistry(b *testing.B) {
	env := seedBench(b)
	ids := env.ids
	b.Run("GetSession/warm", func(b *testing.B) {
		measure(b, func(int) func() error {
			return func() error {
				_, err := env.internal.GetSession(b.Context(), &registryv1.GetSessionRequest{ProjectId: "bench", AuthSessionId: ids[0]})
				return err
			}
		})
	})
	b.Run("GetSession/cold", func(b *testing.B) {
		measure(b, func(i int) func() error {
			id := ids[(i*7919)%len(ids)]
			return func() error {
				_, err := env.internal.GetSession(b.Context(), &registryv1.GetSessionRequest{ProjectId: "bench", AuthSessionId: id})
				return err
			}
		})
	})
	b.Run("GetStorageState/warm", func(b *testing.B) {
		measure(b, func(int) func() error {
			return func() error {
				_, err := env.internal.GetStorageState(b.Context(), &registryv1.GetStorageStateRequest{ProjectId: "bench", AuthSessionId: ids[1]})
				return err
			}
		})
	})
	b.Run("GetStorageState/cold", func(b *testing.B) {
		measure(b, func(i int) func() error {
			id := ids[(i*7919)%len(ids)]
			env.redis.FlushAll(b.Context()) // not timed: every read misses the cache
			return func() error {
				_, err := env.internal.GetStorageState(b.Context(), &registryv1.GetStorageStateRequest{ProjectId: "bench", AuthSessionId: id})
				return err
			}
		})
	})
	b.Run("ListAuthSessions/first-page", func(b *testing.B) {
		measure(b, func(int) func() error {
			return func() error {
				r, err := env.public.ListAuthSessions(b.Context(), &latchkeyv1.ListAuthSessionsRequest{PageSize: 100})
				if err == nil && len(r.GetAuthSessions()) != 100 {
					err = fmt.Errorf("page of %d", len(r.GetAuthSessions()))
				}
				return err
			}
		})
	})
	b.Run("ListAuthSessions/last-page", func(b *testing.B) {
		measure(b, func(int) func() error {
			return func() error {
				r, err := env.public.ListAuthSessions(b.Context(), &latchkeyv1.ListAuthSessionsRequest{PageSize: 100, PageToken: env.lastPage})
				if err == nil && len(r.GetAuthSessions()) != 100 {
					err = fmt.Errorf("page of %d", len(r.GetAuthSessions()))
				}
				return err
			}
		})
	})
}

// measure runs prepare(i) untimed and the call it returns timed, b.N times, and
// reports the p50 and p99 latency of the calls.
func measure(b *testing.B, prepare func(i int) func() error) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		call := prepare(i)
		b.StartTimer()
		t0 := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

type benchEnv struct {
	internal registryv1.SessionStateServiceClient
	public   latchkeyv1.AuthSessionServiceClient
	redis    *redis.Client
	ids      []string
	lastPage string
}

// seedBench starts a registry with a Redis cache and stores the sessions and states
// directly through its store (the setup is not measured).
func seedBench(b *testing.B) benchEnv {
	b.Helper()
	_, nc, js := testkit.NATS(b)
	rs := testkit.Redis(b)
	c, err := cache.Open(b.Context(), cache.Config{URL: rs.URL(), Logger: logging.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	auth := server.NewAuthenticator(internalToken, adminKey, nil)
	srv := server.NewForTests(b, auth)
	unused := benchDial(b, srv.GRPCAddr(), internalToken)
	svc, err := New(Config{AdminKey: adminKey, InternalToken: internalToken}, Deps{
		Logger: logging.Discard(), Tracer: noop.NewTracerProvider(), JS: js, NC: nc, Cache: c,
		Vault: vaultv1.NewVaultServiceClient(unused), Runs: latchkeyv1.NewRunServiceClient(unused),
	})
	if err != nil {
		b.Fatal(err)
	}
	svc.Register(srv)
	auth.SetKeyVerifier(svc.KeyVerifier())
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	if err := svc.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	st := svc.api.Store()
	ctx := b.Context()
	if _, err := st.CreateProject(ctx, "bench", ""); err != nil {
		b.Fatal(err)
	}
	_, key, err := st.CreateKey(ctx, "bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	sealed := make([]byte, benchStateSize)
	_, _ = rand.Read(sealed)
	began := time.Now()
	env := benchEnv{redis: redis.NewClient(&redis.Options{Addr: rs.Addr})}
	b.Cleanup(func() { env.redis.Close() })
	for i := range benchSessions {
		id := fmt.Sprintf("s-%05d", i)
		if _, err := st.CreateSession(ctx, &registryv1.SessionRecord{Session: &latchkeyv1.AuthSession{
			Id: id, ProjectId: "bench", Type: latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, State: latchkeyv1.SessionState_SESSION_STATE_PENDING,
			Labels: map[string]string{"team": "t" + fmt.Sprint(i%10)},
		}}); err != nil {
			b.Fatal(err)
		}
		if _, err := st.PutState(ctx, "bench", id, sealed, store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		env.ids = append(env.ids, id)
	}
	b.Logf("seeded %d sessions with %d-byte states in %s", benchSessions, benchStateSize, time.Since(began).Round(time.Millisecond))
	env.internal = registryv1.NewSessionStateServiceClient(benchDial(b, srv.GRPCAddr(), internalToken))
	env.public = latchkeyv1.NewAuthSessionServiceClient(benchDial(b, srv.GRPCAddr(), key))
	// The token of the last full page: walk the pages once.
	for token := ""; ; {
		r, err := env.public.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{PageSize: 100, PageToken: token})
		if err != nil {
			b.Fatal(err)
		}
		next := r.GetPageInfo().GetNextPageToken()
		if next == "" {
			break
		}
		env.lastPage, token = token, next
	}
	return env
}

func benchDial(b *testing.B, addr, token string) *grpc.ClientConn {
	cc, err := server.Dial(addr, server.DialOptions{Token: token})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return cc
}
