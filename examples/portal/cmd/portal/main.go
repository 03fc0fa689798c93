// Command portal serves the Latchkey demo portal on its own, for the demo and for
// trying recipes by hand. See examples/portal/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/latchkey/latchkey/examples/portal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "portal:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("portal", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:7490", "address to listen on")
	ttl := fs.Duration("session-ttl", portal.DefaultSessionTTL, "session lifetime without use")
	lockout := fs.Int("lockout-after", portal.DefaultLockoutAfter, "consecutive failed logins that lock a user (negative: never)")
	rotate := fs.Bool("rotate-cookie", true, "issue a fresh session cookie value on every authenticated request")
	usersFile := fs.String("users", "", `JSON file of users replacing the defaults: [{"username":"dave","password":"pw","totp_secret":"BASE32","email_code":false,"single_use_totp":false}]`)
	banner := fs.String("login-banner", "", "a notice shown on the login page in a visible alert (#site-notice)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := portal.Config{
		SessionTTL:            *ttl,
		LockoutAfter:          *lockout,
		DisableCookieRotation: !*rotate,
		LoginBanner:           *banner,
		Logger:                log,
	}
	if *usersFile != "" {
		users, err := readUsers(*usersFile)
		if err != nil {
			return err
		}
		cfg.Users = users
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: portal.New(cfg), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "demo portal listening on http://%s (users alice, bob, carol, erin unless -users)\n", ln.Addr())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

func readUsers(path string) ([]portal.User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	var users []portal.User
	if err := json.Unmarshal(b, &users); err != nil {
		return nil, fmt.Errorf("read users from %s: %w (want a JSON array of {\"username\",\"password\",\"totp_secret\",\"email_code\"})", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("read users from %s: the file lists no users", path)
	}
	for i, u := range users {
		if u.Username == "" || u.Password == "" {
			return nil, fmt.Errorf("read users from %s: user %d needs a username and a password", path, i)
		}
	}
	return users, nil
}
