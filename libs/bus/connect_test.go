package bus_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/testkit"
)

// startConfigured runs an embedded nats-server on a random 127.0.0.1 port with
// the given options (JetStream on unless off is set) and stops it when the test ends.
func startConfigured(t *testing.T, opts server.Options, jetStreamOff bool) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", server.RANDOM_PORT, true, true
	opts.JetStream, opts.StoreDir = !jetStreamOff, t.TempDir()
	srv, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10e9) {
		t.Fatal("nats-server not ready in 10s")
	}
	return srv
}

// connect runs bus.Connect and closes what it opened when the test ends.
func connect(t *testing.T, opts bus.ConnectOptions) error {
	t.Helper()
	if opts.Name == "" {
		opts.Name = t.Name()
	}
	nc, _, err := bus.Connect(t.Context(), opts)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return err
}

// TestConnectRefusesTooOldServer runs the nats-server Debian 12 ships (2.9) as a
// process: Connect must refuse it, naming its version and the minimum.
func TestConnectRefusesTooOldServer(t *testing.T) {
	t.Parallel()
	old := testkit.StartNATSProcess(t, testkit.SystemNATSServer(t))
	raw, err := nats.Connect(old.URL)
	if err != nil {
		t.Fatal(err)
	}
	version := raw.ConnectedServerVersion()
	raw.Close()
	if ok, err := bus.VersionAtLeast(version, bus.MinServerVersion); err != nil || ok {
		t.Skipf("the system nats-server is %s, not older than %s: nothing to refuse (%v)", version, bus.MinServerVersion, err)
	}

	err = connect(t, bus.ConnectOptions{URL: old.URL})
	if !errors.Is(err, bus.ErrServerTooOld) {
		t.Fatalf("Connect to nats-server %s: got %v, want ErrServerTooOld", version, err)
	}
	want := fmt.Sprintf("NATS server %s at %s is too old: Latchkey needs %s or newer (per-message TTLs)", version, old.URL, bus.MinServerVersion)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestConnectRefusesServerWithoutJetStream(t *testing.T) {
	t.Parallel()
	srv := startConfigured(t, server.Options{}, true)
	err := connect(t, bus.ConnectOptions{URL: srv.ClientURL()})
	if !errors.Is(err, bus.ErrNoJetStream) || !strings.Contains(err.Error(), "-js") {
		t.Fatalf("Connect to a server without JetStream: got %v, want ErrNoJetStream telling to run with -js", err)
	}
}

func TestConnectAuthenticates(t *testing.T) {
	t.Parallel()
	withUser := startConfigured(t, server.Options{Username: "alice", Password: "s3cret-pw"}, false)
	withToken := startConfigured(t, server.Options{Authorization: "s3cret-token"}, false)
	userURL, tokenURL := withUser.ClientURL(), withToken.ClientURL()
	hostOf := func(u string) string { return strings.TrimPrefix(u, "nats://") }

	tests := []struct {
		name string
		opts bus.ConnectOptions
		// wantRefused is "" when the connection must succeed, else what the
		// error must say about the credentials.
		wantRefused string
	}{
		{"user and password", bus.ConnectOptions{URL: userURL, User: "alice", Password: "s3cret-pw"}, ""},
		{"user and password in the URL", bus.ConnectOptions{URL: "nats://alice:s3cret-pw@" + hostOf(userURL)}, ""},
		{"wrong password", bus.ConnectOptions{URL: userURL, User: "alice", Password: "wrong"}, `the password of user "alice"`},
		{"wrong password in the URL", bus.ConnectOptions{URL: "nats://alice:wrong@" + hostOf(userURL)}, "the credentials in the URL"},
		{"no password", bus.ConnectOptions{URL: userURL}, "a client with no credentials"},
		{"token", bus.ConnectOptions{URL: tokenURL, Token: "s3cret-token"}, ""},
		{"token in the URL", bus.ConnectOptions{URL: "nats://s3cret-token@" + hostOf(tokenURL)}, ""},
		{"wrong token", bus.ConnectOptions{URL: tokenURL, Token: "wrong"}, "the token"},
		{"no token", bus.ConnectOptions{URL: tokenURL}, "a client with no credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := connect(t, tt.opts)
			if tt.wantRefused == "" {
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				return
			}
			if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), "the server refused "+tt.wantRefused) {
				t.Fatalf("Connect: got %v, want an authorization error naming %s", err, tt.wantRefused)
			}
			for _, secret := range []string{"s3cret-pw", "s3cret-token", "wrong"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows the secret %q", err, secret)
				}
			}
		})
	}
}

func TestConnectOverTLS(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t)
	serverCert, serverKey := ca.Issue(t, "nats")
	clientCert, clientKey := ca.Issue(t, "latchkey")
	tlsConfig, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: serverCert, KeyFile: serverKey, CaFile: ca.CertFile, Verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := startConfigured(t, server.Options{TLS: true, TLSVerify: true, TLSConfig: tlsConfig, TLSTimeout: 2}, false)
	otherCA := testkit.NewCA(t)
	strangerCert, strangerKey := otherCA.Issue(t, "stranger")
	url := srv.ClientURL()

	tests := []struct {
		name    string
		opts    bus.ConnectOptions
		wantErr string // "" when the connection must succeed
	}{
		{"CA and client certificate", bus.ConnectOptions{URL: url, TLSCA: ca.CertFile, TLSCert: clientCert, TLSKey: clientKey}, ""},
		{"tls:// URL", bus.ConnectOptions{URL: strings.Replace(url, "nats://", "tls://", 1), TLSCA: ca.CertFile, TLSCert: clientCert, TLSKey: clientKey}, ""},
		{"server signed by an unknown CA", bus.ConnectOptions{URL: url, TLSCA: otherCA.CertFile, TLSCert: clientCert, TLSKey: clientKey}, "certificate signed by unknown authority"},
		{"no CA: the system roots", bus.ConnectOptions{URL: url, TLSCert: clientCert, TLSKey: clientKey}, "certificate signed by unknown authority"},
		// TLS 1.3 checks a client's certificate after the client's handshake is done:
		// the client may only see the server hang up.
		{"no client certificate", bus.ConnectOptions{URL: url, TLSCA: ca.CertFile}, "tls"},
		{"client certificate of another CA", bus.ConnectOptions{URL: url, TLSCA: ca.CertFile, TLSCert: strangerCert, TLSKey: strangerKey}, "tls"},
		{"missing CA file", bus.ConnectOptions{URL: url, TLSCA: ca.CertFile + ".missing"}, "rootCA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := connect(t, tt.opts)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Connect: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Connect: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConnectRejectsContradictoryOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts bus.ConnectOptions
		want string
	}{
		{"no URL", bus.ConnectOptions{}, "no server URL"},
		{"token and user", bus.ConnectOptions{URL: "nats://127.0.0.1:1", Token: "t", User: "u", Password: "p"}, "a token and a user and password set"},
		{"creds and nkey", bus.ConnectOptions{URL: "nats://127.0.0.1:1", CredsFile: "a.creds", NKeyFile: "seed"}, "a creds file and an nkey seed file set"},
		{"password alone", bus.ConnectOptions{URL: "nats://127.0.0.1:1", Password: "p"}, "a password with no user"},
		{"user in URL and field", bus.ConnectOptions{URL: "nats://a:b@127.0.0.1:1", User: "u"}, "credentials in the URL and a user and password"},
		{"cert without key", bus.ConnectOptions{URL: "nats://127.0.0.1:1", TLSCert: "c.pem"}, "both its certificate and its key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := bus.Connect(t.Context(), tt.opts)
			if !errors.Is(err, bus.ErrBadConnectOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Connect: got %v, want ErrBadConnectOptions saying %q", err, tt.want)
			}
		})
	}
}

func TestConnectOptionsNeverPrintSecrets(t *testing.T) {
	t.Parallel()
	opts := bus.ConnectOptions{URL: "nats://bob:pw-canary@h1:4222,nats://tok-canary@h2:4222", User: "bob", Password: "pw2-canary", Token: "tok2-canary"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("connecting", "nats", opts)
	for _, out := range []string{buf.String(), opts.String(), fmt.Sprintf("%v %+v %#v %s", opts, opts, opts, opts)} {
		for _, secret := range []string{"pw-canary", "tok-canary", "pw2-canary", "tok2-canary"} {
			if strings.Contains(out, secret) {
				t.Errorf("secret %q printed in %q", secret, out)
			}
		}
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://alice:pw@h:4222", "nats://alice:REDACTED@h:4222"},
		{"nats://tok@h:4222", "nats://REDACTED@h:4222"},
		{"alice:pw@h:4222", "nats://alice:REDACTED@h:4222"},
		{"nats://a:pw@h1:4222, nats://a:pw@h2:4222", "nats://a:REDACTED@h1:4222,nats://a:REDACTED@h2:4222"},
		{"tls://h:4222,nats://tok@h2", "tls://h:4222,nats://REDACTED@h2"},
	}
	for _, tt := range tests {
		if got := bus.RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	t.Parallel()
	tests := []struct {
		have string
		want bool
	}{
		{"2.9.10", false},
		{"2.10.29", false},
		{"2.11.0", true},
		{"2.11.0-RC.1", true},
		{"v2.12.3", true},
		{"2.15.2", true},
		{"3.0.0", true},
		{"1.99.99", false},
	}
	for _, tt := range tests {
		got, err := bus.VersionAtLeast(tt.have, bus.MinServerVersion)
		if err != nil || got != tt.want {
			t.Errorf("VersionAtLeast(%q, %q) = %v, %v; want %v", tt.have, bus.MinServerVersion, got, err, tt.want)
		}
	}
	if _, err := bus.VersionAtLeast("2.11", bus.MinServerVersion); err == nil {
		t.Error("VersionAtLeast accepted 2.11 (no patch)")
	}
}
