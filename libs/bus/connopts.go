package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"
)

// ErrBadConnectOptions is returned by Connect for options that contradict each other.
var ErrBadConnectOptions = errors.New("invalid nats connect options")

// ConnectOptions say where Connect connects and how it proves who it is.
type ConnectOptions struct {
	// URL is the server, or a comma-separated list of servers of one cluster. A
	// user and password (nats://user:pass@host) or a token (nats://token@host)
	// may come in it instead of the fields below.
	URL string
	// Name is the client name the server shows in its connection list.
	Name string
	// Logger receives disconnects and reconnects; nil discards them.
	Logger *slog.Logger

	// At most one way to authenticate: CredsFile (a user JWT and its seed, as
	// `nsc` writes them), NKeyFile (a file holding an nkey seed), Token, or User
	// with Password.
	CredsFile string
	NKeyFile  string
	Token     string // secret
	User      string
	Password  string // secret

	// TLSCA is a PEM file of the CAs that sign the server's certificate; setting
	// it turns TLS on. Without it TLS follows the URL (tls://) and the server,
	// verified against the system's roots.
	TLSCA string
	// TLSCert and TLSKey are a client certificate and its key (PEM files), for
	// servers that verify clients; both or neither.
	TLSCert string
	TLSKey  string
}

// LogValue implements slog.LogValuer without the secrets.
func (o ConnectOptions) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", RedactURL(o.URL)),
		slog.String("name", o.Name),
		slog.String("auth", o.authDescription()),
		slog.String("tls_ca", o.TLSCA),
		slog.String("tls_cert", o.TLSCert),
	)
}

// String implements fmt.Stringer without the secrets.
func (o ConnectOptions) String() string { return o.LogValue().String() }

// GoString keeps %#v from printing the secrets.
func (o ConnectOptions) GoString() string { return o.String() }

// validate rejects options that contradict each other, naming what to drop.
func (o ConnectOptions) validate() error {
	var errs []error
	if strings.TrimSpace(o.URL) == "" {
		errs = append(errs, errors.New("no server URL"))
	}
	var ways []string
	for _, w := range []struct {
		set  bool
		name string
	}{
		{o.CredsFile != "", "a creds file"},
		{o.NKeyFile != "", "an nkey seed file"},
		{o.Token != "", "a token"},
		{o.User != "", "a user and password"},
	} {
		if w.set {
			ways = append(ways, w.name)
		}
	}
	if len(ways) > 1 {
		errs = append(errs, fmt.Errorf("%s set: give one way to authenticate", strings.Join(ways, " and ")))
	}
	if o.Password != "" && o.User == "" {
		errs = append(errs, errors.New("a password with no user"))
	}
	if len(ways) > 0 && urlHasUserInfo(o.URL) {
		errs = append(errs, fmt.Errorf("credentials in the URL and %s: give one", ways[0]))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		errs = append(errs, errors.New("a client certificate needs both its certificate and its key file"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConnectOptions, err)
	}
	return nil
}

// authOptions turns the credentials and TLS settings into nats.go options.
func (o ConnectOptions) authOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.NKeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading nkey seed file %s: %w", o.NKeyFile, err)
		}
		opts = append(opts, opt)
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// authDescription says how the client authenticates, without secrets, so an
// authorization error says which credentials the server refused.
func (o ConnectOptions) authDescription() string {
	switch {
	case o.CredsFile != "":
		return "the creds file " + o.CredsFile
	case o.NKeyFile != "":
		return "the nkey seed file " + o.NKeyFile
	case o.Token != "":
		return "the token"
	case o.User != "":
		return fmt.Sprintf("the password of user %q", o.User)
	case urlHasUserInfo(o.URL):
		return "the credentials in the URL"
	default:
		return "a client with no credentials"
	}
}

// redactedUser stands in for a password or token in a printed URL.
const redactedUser = "REDACTED"

// RedactURL hides the password or token in a NATS URL, or in each URL of a
// comma-separated list: nats://user:pass@host becomes nats://user:REDACTED@host
// and nats://token@host becomes nats://REDACTED@host (NATS reads a user with no
// password as a token).
func RedactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		p = withScheme(strings.TrimSpace(p))
		pu, err := url.Parse(p)
		if err != nil {
			// Unparsable: keep only what is certainly no secret.
			if at := strings.LastIndex(p, "@"); at >= 0 {
				p = redactedUser + p[at:]
			}
			parts[i] = p
			continue
		}
		if pu.User != nil {
			if _, ok := pu.User.Password(); ok {
				pu.User = url.UserPassword(pu.User.Username(), redactedUser)
			} else {
				pu.User = url.User(redactedUser)
			}
		}
		parts[i] = pu.String()
	}
	return strings.Join(parts, ",")
}

// urlHasUserInfo tells whether any URL in the list carries a user or token.
func urlHasUserInfo(u string) bool {
	for p := range strings.SplitSeq(u, ",") {
		if pu, err := url.Parse(withScheme(strings.TrimSpace(p))); err == nil && pu.User != nil {
			return true
		}
	}
	return false
}

// withScheme adds nats:// to a URL without a scheme, as nats.go does.
func withScheme(u string) string {
	if u == "" || strings.Contains(u, "://") {
		return u
	}
	return "nats://" + u
}
