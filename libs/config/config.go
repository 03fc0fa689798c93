// Package config reads Latchkey's configuration from LATCHKEY_* environment variables
// and command-line flags (a flag wins over its variable), as DESIGN.md section 10 lists.
package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults bind to loopback, so a development stack is never reachable from outside.
const (
	DefaultGRPCAddr       = "127.0.0.1:7400"
	DefaultHTTPAddr       = "127.0.0.1:7480"
	DefaultEmbeddedNATS   = "127.0.0.1:4223"
	DefaultRunnerContexts = 4
	// DefaultRunnerLoginContexts is how many logins a runner runs at once on its
	// login lane, beyond its contexts.
	DefaultRunnerLoginContexts = 1
	DefaultRunnerPool          = "default"
	DefaultRecorderTTL         = 10 * time.Minute
	// DefaultNATSReplicas suits one NATS server; a JetStream cluster wants 3.
	DefaultNATSReplicas = 1
	// MaxRecorderTTL keeps recorder URLs short-lived (and within LK_RECORDINGS' age).
	// A RECORD Run lives the URL's life plus two minutes to check the capture, and a
	// Run's timeout is at most an hour: 55 minutes leaves that room.
	MaxRecorderTTL = 55 * time.Minute
)

// Config is the configuration of every service and of `latchkey dev`. Fields that hold
// secrets are redacted by LogValue and String.
type Config struct {
	// NATSURL is the NATS server to use, or a comma-separated list of a cluster's
	// servers; empty runs an embedded server (dev only). It may carry a user and
	// password (secret: redacted when logged).
	NATSURL string
	// NATSReplicas is how many copies JetStream keeps of every stream and bucket:
	// 1 on one server, 3 (or 5) on a cluster of at least that many servers.
	NATSReplicas int
	// NATSCreds is a .creds file (user JWT and seed) to authenticate to NATS with.
	NATSCreds string
	// NATSNKey is a file holding an nkey seed to authenticate to NATS with.
	NATSNKey string
	// NATSUser and NATSPassword (secret) authenticate to NATS with a password.
	NATSUser     string
	NATSPassword string
	// NATSToken authenticates to NATS with a token (secret).
	NATSToken string
	// NATSTLSCA is a PEM file of the CAs that sign the NATS servers' certificates;
	// setting it turns TLS on.
	NATSTLSCA string
	// NATSTLSCert and NATSTLSKey are a client certificate and key (PEM files) for
	// NATS servers that verify their clients.
	NATSTLSCert string
	NATSTLSKey  string
	// RedisURL is the Redis server for caches; empty uses an in-process cache.
	// rediss:// connects with TLS.
	RedisURL string
	// RedisTLSCA is the PEM file of the CAs that sign Redis's certificate (rediss://);
	// empty: the system's roots.
	RedisTLSCA string
	// TLSCert and TLSKey are the service's certificate and key: with them the gRPC and
	// HTTP listeners speak TLS only, and the service presents the certificate to its
	// peers (mTLS). TLSCA signs the peers' certificates.
	TLSCert string
	TLSKey  string
	TLSCA   string
	// DevTLS makes `latchkey dev` generate a local CA and certificates in its data
	// directory and serve TLS with them, so TLS can be tried on one machine.
	DevTLS bool
	// DataDir holds the embedded NATS store, generated keys and the dev API key.
	DataDir string
	// GRPCAddr is where the gRPC API listens.
	GRPCAddr string
	// HTTPAddr is where health, metrics and the recorder page listen.
	HTTPAddr string
	// EmbeddedNATSAddr is where the embedded NATS server listens.
	EmbeddedNATSAddr string
	// VaultKeys is the master key ring, "v1:base64key,v2:base64key" (secret).
	VaultKeys string
	// VaultKeyFile is a file holding VaultKeys, used when VaultKeys is empty.
	VaultKeyFile string
	// InternalToken authenticates the services to each other (secret).
	InternalToken string
	// AdminKey is the bootstrap key that manages projects (secret).
	AdminKey string
	// ChromiumPath is the browser binary; empty auto-detects.
	ChromiumPath string
	// RunnerContexts bounds the browser contexts a runner keeps open.
	RunnerContexts int
	// RunnerLoginContexts is how many logins (and verifications of their state) a
	// runner runs at once beyond RunnerContexts, on the pool's login lane.
	RunnerLoginContexts int
	// RunnerPool is the pool whose tasks a runner takes (lk.tasks.<pool>).
	RunnerPool string
	// RegistryAddr, VaultAddr and SchedulerAddr are where services reach each other
	// when run apart (`latchkey serve`). Empty means this process's own gRPC listener.
	RegistryAddr  string
	VaultAddr     string
	SchedulerAddr string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is text or json.
	LogFormat string
	// ShutdownTimeout bounds the whole ordered shutdown.
	ShutdownTimeout time.Duration
	// RefreshInterval is how often the scheduler looks for READY sessions whose
	// proactive refresh is due.
	RefreshInterval time.Duration
	// SessionLoginBudget and OriginLoginBudget cap automatic logins per hour per
	// session and per target origin.
	SessionLoginBudget int64
	OriginLoginBudget  int64
	// PublicURL is the base of the recorder URLs the registry hands out, as a person's
	// browser reaches the HTTP listener; empty: http://<HTTPAddr>.
	PublicURL string
	// RecorderSecret keys the recorder's URLs and live view (secret); empty: derived
	// from InternalToken.
	RecorderSecret string
	// RecorderTTL is how long a recorder URL (and the browser it holds) lives.
	RecorderTTL time.Duration

	// replicasEnvErr is why Register could not read LATCHKEY_NATS_REPLICAS;
	// Validate reports it unless -nats-replicas overrode the variable.
	replicasEnvErr error
}

// Secret is a string that never prints itself.
const redacted = "[REDACTED]"

// LogValue implements slog.LogValuer, masking secrets.
func (c Config) LogValue() slog.Value {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return redacted
	}
	return slog.GroupValue(
		slog.String("nats_url", redactNATSURL(c.NATSURL)),
		slog.Int("nats_replicas", c.NATSReplicas),
		slog.String("nats_creds", c.NATSCreds),
		slog.String("nats_nkey", c.NATSNKey),
		slog.String("nats_user", c.NATSUser),
		slog.String("nats_password", mask(c.NATSPassword)),
		slog.String("nats_token", mask(c.NATSToken)),
		slog.String("nats_tls_ca", c.NATSTLSCA),
		slog.String("nats_tls_cert", c.NATSTLSCert),
		slog.String("nats_tls_key", c.NATSTLSKey),
		slog.String("redis_url", redactURL(c.RedisURL)),
		slog.String("redis_tls_ca", c.RedisTLSCA),
		slog.String("tls_cert", c.TLSCert),
		slog.String("tls_ca", c.TLSCA),
		slog.String("data_dir", c.DataDir),
		slog.String("grpc_addr", c.GRPCAddr),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("vault_keys", mask(c.VaultKeys)),
		slog.String("vault_key_file", c.VaultKeyFile),
		slog.String("internal_token", mask(c.InternalToken)),
		slog.String("recorder_secret", mask(c.RecorderSecret)),
		slog.String("admin_key", mask(c.AdminKey)),
		slog.String("chromium_path", c.ChromiumPath),
		slog.Int("runner_contexts", c.RunnerContexts),
		slog.Int("runner_login_contexts", c.RunnerLoginContexts),
		slog.String("runner_pool", c.RunnerPool),
		slog.String("registry_addr", c.RegistryAddr),
		slog.String("vault_addr", c.VaultAddr),
		slog.String("scheduler_addr", c.SchedulerAddr),
		slog.String("log_level", c.LogLevel),
		slog.String("log_format", c.LogFormat),
		slog.Duration("refresh_interval", c.RefreshInterval),
		slog.String("public_url", c.PublicURL),
		slog.Duration("recorder_ttl", c.RecorderTTL),
	)
}

// String implements fmt.Stringer without secrets.
func (c Config) String() string { return c.LogValue().String() }

// GoString keeps %#v from printing secrets.
func (c Config) GoString() string { return c.String() }

// redactURL removes a password from a URL such as redis://user:pass@host.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	creds := u[scheme+3 : at]
	if i := strings.Index(creds, ":"); i >= 0 {
		return u[:scheme+3] + creds[:i] + ":" + redacted + u[at:]
	}
	return u
}

// redactNATSURL hides the password or token of each URL in a comma-separated
// NATS server list. NATS reads a user with no password (nats://secret@host) as a
// token, so that is hidden too.
func redactNATSURL(list string) string {
	parts := strings.Split(list, ",")
	for i, u := range parts {
		at := strings.LastIndex(u, "@")
		if at < 0 {
			continue
		}
		start := 0
		if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
			start = scheme + 3
		}
		creds := u[start:at]
		if j := strings.Index(creds, ":"); j >= 0 {
			creds = creds[:j] + ":" + redacted
		} else {
			creds = redacted
		}
		parts[i] = u[:start] + creds + u[at:]
	}
	return strings.Join(parts, ",")
}

// Env is the environment as a lookup function, so tests need not touch os.Environ.
type Env func(key string) (string, bool)

// OSEnv reads the process environment.
func OSEnv(key string) (string, bool) { return os.LookupEnv(key) }

// MapEnv is an Env over a map, for tests.
func MapEnv(m map[string]string) Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// Register declares one flag per field on fs, each defaulting to its LATCHKEY_* variable
// from env, then to the built-in default. It returns the Config the flags fill on Parse.
func Register(fs *flag.FlagSet, env Env) *Config {
	c := &Config{}
	str := func(p *string, name, envKey, def, usage string) {
		if v, ok := env(envKey); ok && v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage+" ($"+envKey+")")
	}
	str(&c.NATSURL, "nats-url", "LATCHKEY_NATS_URL", "", "NATS server URL, or a comma-separated list of a cluster's; empty runs an embedded server")
	str(&c.NATSCreds, "nats-creds", "LATCHKEY_NATS_CREDS", "", "NATS .creds file (user JWT and nkey seed) to authenticate with")
	str(&c.NATSNKey, "nats-nkey", "LATCHKEY_NATS_NKEY", "", "file holding an nkey seed to authenticate to NATS with")
	str(&c.NATSUser, "nats-user", "LATCHKEY_NATS_USER", "", "NATS user (with -nats-password); or put user:password in the URL")
	str(&c.NATSPassword, "nats-password", "LATCHKEY_NATS_PASSWORD", "", "NATS password of -nats-user")
	str(&c.NATSToken, "nats-token", "LATCHKEY_NATS_TOKEN", "", "NATS token to authenticate with")
	str(&c.NATSTLSCA, "nats-tls-ca", "LATCHKEY_NATS_TLS_CA", "", "PEM file of the CAs that sign the NATS servers' certificates (turns TLS on)")
	str(&c.NATSTLSCert, "nats-tls-cert", "LATCHKEY_NATS_TLS_CERT", "", "client certificate (PEM) for NATS servers that verify clients")
	str(&c.NATSTLSKey, "nats-tls-key", "LATCHKEY_NATS_TLS_KEY", "", "key (PEM) of -nats-tls-cert")
	str(&c.RedisURL, "redis-url", "LATCHKEY_REDIS_URL", "", "Redis URL for caches (rediss:// for TLS, redis://user:password@ for ACL users); empty uses an in-process cache")
	str(&c.RedisTLSCA, "redis-tls-ca", "LATCHKEY_REDIS_TLS_CA", "", "PEM file of the CAs that sign Redis's certificate (rediss://; default: the system's)")
	str(&c.TLSCert, "tls-cert", "LATCHKEY_TLS_CERT", "", "certificate (PEM) of the gRPC and HTTP listeners, also presented to peer services (mTLS); reloaded when the file changes")
	str(&c.TLSKey, "tls-key", "LATCHKEY_TLS_KEY", "", "key (PEM) of -tls-cert")
	fs.BoolVar(&c.DevTLS, "dev-tls", false, "latchkey dev: generate a local CA and certificates in <data-dir>/tls and serve TLS with them")
	str(&c.TLSCA, "tls-ca", "LATCHKEY_TLS_CA", "", "PEM file of the CAs that sign the services' certificates: peers are verified with it, and client certificates when presented")
	str(&c.DataDir, "data-dir", "LATCHKEY_DATA_DIR", defaultDataDir(env), "data directory (embedded NATS store, dev keys)")
	str(&c.GRPCAddr, "grpc-addr", "LATCHKEY_GRPC_ADDR", DefaultGRPCAddr, "gRPC listen address")
	str(&c.HTTPAddr, "http-addr", "LATCHKEY_HTTP_ADDR", DefaultHTTPAddr, "HTTP listen address (health, metrics, recorder)")
	str(&c.EmbeddedNATSAddr, "embedded-nats-addr", "LATCHKEY_EMBEDDED_NATS_ADDR", DefaultEmbeddedNATS, "embedded NATS listen address")
	str(&c.VaultKeys, "vault-keys", "LATCHKEY_VAULT_KEYS", "", "vault master keys, \"v1:base64,...\"")
	str(&c.VaultKeyFile, "vault-key-file", "LATCHKEY_VAULT_KEY_FILE", "", "file holding the vault master keys")
	str(&c.InternalToken, "internal-token", "LATCHKEY_INTERNAL_TOKEN", "", "token services use to authenticate each other")
	str(&c.AdminKey, "admin-key", "LATCHKEY_ADMIN_KEY", "", "bootstrap admin key")
	str(&c.ChromiumPath, "chromium-path", "LATCHKEY_CHROMIUM_PATH", "", "Chromium binary; empty auto-detects")
	str(&c.RunnerPool, "runner-pool", "LATCHKEY_RUNNER_POOL", DefaultRunnerPool, "runner pool to take tasks from")
	str(&c.RegistryAddr, "registry-addr", "LATCHKEY_REGISTRY_ADDR", "", "session-registry gRPC address (default: grpc-addr)")
	str(&c.VaultAddr, "vault-addr", "LATCHKEY_VAULT_ADDR", "", "credential-vault gRPC address (default: grpc-addr)")
	str(&c.SchedulerAddr, "scheduler-addr", "LATCHKEY_SCHEDULER_ADDR", "", "scheduler gRPC address (default: grpc-addr)")
	str(&c.LogLevel, "log-level", "LATCHKEY_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	str(&c.LogFormat, "log-format", "LATCHKEY_LOG_FORMAT", "text", "log format: text or json")
	str(&c.RecorderSecret, "recorder-secret", "LATCHKEY_RECORDER_SECRET", "", "secret that signs recorder URLs and live-view frames (registry and runners; default: derived from the internal token)")
	str(&c.PublicURL, "public-url", "LATCHKEY_PUBLIC_URL", "", "base URL of recorder links as people reach the HTTP listener (default: http://<http-addr>)")

	replicas := DefaultNATSReplicas
	if v, ok := env("LATCHKEY_NATS_REPLICAS"); ok && v != "" {
		// A typo must not quietly leave a cluster with one copy of everything.
		n, err := strconv.Atoi(v)
		if err != nil {
			n, c.replicasEnvErr = 0, fmt.Errorf("LATCHKEY_NATS_REPLICAS=%q is not a number: set 1, 3 or 5", v)
		}
		replicas = n
	}
	fs.IntVar(&c.NATSReplicas, "nats-replicas", replicas, "copies JetStream keeps of every stream and bucket: 1 on one server, 3 or 5 on a cluster of at least that many ($LATCHKEY_NATS_REPLICAS)")
	contexts := DefaultRunnerContexts
	if v, ok := env("LATCHKEY_RUNNER_CONTEXTS"); ok && v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			contexts = n
		}
	}
	fs.IntVar(&c.RunnerContexts, "runner-contexts", contexts, "browser contexts a runner keeps open ($LATCHKEY_RUNNER_CONTEXTS)")
	logins := DefaultRunnerLoginContexts
	if v, ok := env("LATCHKEY_RUNNER_LOGIN_CONTEXTS"); ok && v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			logins = n
		}
	}
	fs.IntVar(&c.RunnerLoginContexts, "runner-login-contexts", logins, "logins a runner runs at once beyond -runner-contexts, so logins never wait for API work ($LATCHKEY_RUNNER_LOGIN_CONTEXTS)")
	shutdown := 15 * time.Second
	if v, ok := env("LATCHKEY_SHUTDOWN_TIMEOUT"); ok && v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			shutdown = d
		}
	}
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", shutdown, "deadline of the ordered shutdown ($LATCHKEY_SHUTDOWN_TIMEOUT)")
	refresh := 30 * time.Second
	if v, ok := env("LATCHKEY_REFRESH_INTERVAL"); ok && v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			refresh = d
		}
	}
	budget := func(p *int64, name, envKey string, def int64, usage string) {
		if v, ok := env(envKey); ok && v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				def = n
			}
		}
		fs.Int64Var(p, name, def, usage+" ($"+envKey+")")
	}
	budget(&c.SessionLoginBudget, "session-login-budget", "LATCHKEY_SESSION_LOGIN_BUDGET", 10, "automatic logins per hour per session before it needs a person")
	budget(&c.OriginLoginBudget, "origin-login-budget", "LATCHKEY_ORIGIN_LOGIN_BUDGET", 60, "automatic logins per hour per target origin")
	fs.DurationVar(&c.RefreshInterval, "refresh-interval", refresh, "how often the scheduler looks for sessions to refresh ($LATCHKEY_REFRESH_INTERVAL)")
	recorderTTL := DefaultRecorderTTL
	if v, ok := env("LATCHKEY_RECORDER_TTL"); ok && v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			recorderTTL = d
		}
	}
	fs.DurationVar(&c.RecorderTTL, "recorder-ttl", recorderTTL, "how long a recorder URL and its hosted browser live ($LATCHKEY_RECORDER_TTL)")
	return c
}

func defaultDataDir(env Env) string {
	if home, ok := env("HOME"); ok && home != "" {
		return filepath.Join(home, ".latchkey")
	}
	return ".latchkey"
}

// Validate reports every problem with c at once, each naming the flag to fix.
func (c *Config) Validate() error {
	errs := c.validateNATS()
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key go together: set both (LATCHKEY_TLS_CERT, LATCHKEY_TLS_KEY) or neither"))
	}
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("-grpc-addr is empty"))
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("-http-addr is empty"))
	}
	if c.RunnerContexts < 1 {
		errs = append(errs, fmt.Errorf("-runner-contexts must be at least 1, got %d", c.RunnerContexts))
	}
	if c.RunnerLoginContexts < 1 {
		errs = append(errs, fmt.Errorf("-runner-login-contexts must be at least 1 (logins need a lane of their own), got %d", c.RunnerLoginContexts))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("-log-level must be debug, info, warn or error, got %q", c.LogLevel))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("-log-format must be text or json, got %q", c.LogFormat))
	}
	if c.SessionLoginBudget < 1 || c.OriginLoginBudget < 1 {
		errs = append(errs, errors.New("-session-login-budget and -origin-login-budget must be at least 1"))
	}
	if c.RefreshInterval < 100*time.Millisecond {
		errs = append(errs, errors.New("-refresh-interval must be at least 100ms"))
	}
	if c.RecorderTTL < 10*time.Second || c.RecorderTTL > MaxRecorderTTL {
		errs = append(errs, fmt.Errorf("-recorder-ttl must be between 10s and %s, got %s", MaxRecorderTTL, c.RecorderTTL))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("-public-url must be an http(s) URL such as https://latchkey.example.com, got %q", c.PublicURL))
		}
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("-shutdown-timeout must be positive"))
	}
	return errors.Join(errs...)
}

// validateNATS checks the NATS settings: replicas JetStream can use well, one way
// to authenticate, and a client certificate with its key.
func (c *Config) validateNATS() []error {
	var errs []error
	switch {
	case c.NATSReplicas == 1 || c.NATSReplicas == 3 || c.NATSReplicas == 5:
	case c.NATSReplicas == 0 && c.replicasEnvErr != nil:
		errs = append(errs, c.replicasEnvErr)
	default:
		errs = append(errs, fmt.Errorf("-nats-replicas (LATCHKEY_NATS_REPLICAS) must be 1 (one server), 3 or 5 (a cluster of at least that many; an odd count keeps a majority when one fails), got %d", c.NATSReplicas))
	}
	var ways []string
	for _, w := range []struct {
		set  bool
		name string
	}{
		{c.NATSCreds != "", "-nats-creds (LATCHKEY_NATS_CREDS)"},
		{c.NATSNKey != "", "-nats-nkey (LATCHKEY_NATS_NKEY)"},
		{c.NATSToken != "", "-nats-token (LATCHKEY_NATS_TOKEN)"},
		{c.NATSUser != "", "-nats-user (LATCHKEY_NATS_USER)"},
		{strings.Contains(c.NATSURL, "@"), "credentials in -nats-url (LATCHKEY_NATS_URL)"},
	} {
		if w.set {
			ways = append(ways, w.name)
		}
	}
	if len(ways) > 1 {
		errs = append(errs, fmt.Errorf("NATS credentials are set in more than one way: %s; keep one", strings.Join(ways, ", ")))
	}
	if c.NATSPassword != "" && c.NATSUser == "" {
		errs = append(errs, errors.New("-nats-password (LATCHKEY_NATS_PASSWORD) needs -nats-user (LATCHKEY_NATS_USER)"))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, errors.New("-nats-tls-cert (LATCHKEY_NATS_TLS_CERT) and -nats-tls-key (LATCHKEY_NATS_TLS_KEY) go together: set both or neither"))
	}
	return errs
}

// NATSCredentialSettings names the settings the NATS credentials came from, for an
// error that says what to check when the server refuses them.
func (c *Config) NATSCredentialSettings() string {
	switch {
	case c.NATSCreds != "":
		return "-nats-creds (LATCHKEY_NATS_CREDS)"
	case c.NATSNKey != "":
		return "-nats-nkey (LATCHKEY_NATS_NKEY)"
	case c.NATSToken != "":
		return "-nats-token (LATCHKEY_NATS_TOKEN)"
	case c.NATSUser != "":
		return "-nats-user and -nats-password (LATCHKEY_NATS_USER, LATCHKEY_NATS_PASSWORD)"
	case strings.Contains(c.NATSURL, "@"):
		return "the user and password in -nats-url (LATCHKEY_NATS_URL)"
	default:
		return "none set: the server wants one of LATCHKEY_NATS_CREDS, LATCHKEY_NATS_NKEY, LATCHKEY_NATS_TOKEN, LATCHKEY_NATS_USER and LATCHKEY_NATS_PASSWORD"
	}
}
