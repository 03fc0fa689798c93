package testkit

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	redisStartTimeout = 10 * time.Second
	redisStartTries   = 3
)

// RedisServer is a private redis-server started by Redis.
type RedisServer struct {
	// Addr is host:port, for redis.Options.Addr.
	Addr string

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	once   sync.Once
	// tls and password are set for a server started by RedisTLS.
	tls      *tls.Config
	password string
}

// URL is the server's redis:// URL (rediss:// with its password for one started by
// RedisTLS), for cache.Config.URL.
func (s *RedisServer) URL() string {
	if s.tls != nil {
		return "rediss://:" + s.password + "@" + s.Addr
	}
	return "redis://" + s.Addr
}

// RedisTLSOptions configure a redis-server that speaks TLS only.
type RedisTLSOptions struct {
	// Cert and Key are the server's certificate and key, CA the CA that signed it.
	Cert, Key, CA string
	// Password is required of clients (requirepass).
	Password string
}

// RedisTLS starts a private redis-server that listens with TLS only (no plaintext
// port) and requires o.Password, as a production Redis reached across machines.
func RedisTLS(t testing.TB, o RedisTLSOptions) *RedisServer {
	t.Helper()
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(o.CA); err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("testkit: reading the CA %s: %v", o.CA, err)
	}
	return startRedisTries(t, func(port int) []string {
		return []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", o.Cert, "--tls-key-file", o.Key,
			"--tls-ca-cert-file", o.CA, "--tls-auth-clients", "no", "--requirepass", o.Password}
	}, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, o.Password)
}

// Stop kills the server and waits until it has exited, so a test can see
// how its code behaves with Redis down. It is safe to call more than once;
// the test's cleanup calls it too.
func (s *RedisServer) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
}

// Redis starts a private redis-server on a free 127.0.0.1 port with no
// persistence, waits until it answers PING, and kills it when the test ends.
// It fails the test if redis-server is not installed.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	return startRedisTries(t, func(port int) []string { return []string{"--port", strconv.Itoa(port)} }, nil, "")
}

func startRedisTries(t testing.TB, listen func(port int) []string, tlsCfg *tls.Config, password string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testkit: redis-server not found on PATH: %s", installHint)
	}
	dir := t.TempDir()
	var lastErr error
	// Another process may take the free port between our probe and
	// redis-server's bind; try again on a new port then.
	for try := range redisStartTries {
		srv, err := startRedis(bin, dir, try, listen, tlsCfg, password)
		if err == nil {
			t.Cleanup(srv.Stop)
			return srv
		}
		lastErr = err
	}
	t.Fatalf("testkit: starting redis-server: %v", lastErr)
	return nil
}

func startRedis(bin, dir string, try int, listen func(port int) []string, tlsCfg *tls.Config, password string) (*RedisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "redis-"+strconv.Itoa(try)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log file: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(bin, append(listen(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
	)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	srv := &RedisServer{
		Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		cmd:    cmd,
		exited: make(chan struct{}),
		tls:    tlsCfg, password: password,
	}
	go func() {
		_ = cmd.Wait()
		close(srv.exited)
	}()

	why := fmt.Sprintf("did not answer PING within %s", redisStartTimeout)
	deadline := time.Now().Add(redisStartTimeout)
wait:
	for time.Now().Before(deadline) {
		if srv.ping() == nil {
			return srv, nil
		}
		select {
		case <-srv.exited:
			why = "exited at start"
			break wait
		case <-time.After(20 * time.Millisecond):
		}
	}
	srv.Stop()
	out, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("redis-server on %s %s; its log:\n%s", srv.Addr, why, strings.TrimSpace(string(out)))
}

// ping sends PING (after AUTH, over TLS, as the server wants) and expects +PONG.
func (s *RedisServer) ping() error {
	d := &net.Dialer{Timeout: 200 * time.Millisecond}
	var conn net.Conn
	var err error
	if s.tls != nil {
		conn, err = tls.DialWithDialer(d, "tcp", s.Addr, s.tls)
	} else {
		conn, err = d.Dial("tcp", s.Addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	cmd := "PING\r\n"
	if s.password != "" {
		cmd = "AUTH " + s.password + "\r\n" + cmd
	}
	if _, err := conn.Write([]byte(cmd)); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	if s.password != "" {
		if ok, err := r.ReadString('\n'); err != nil || strings.TrimSpace(ok) != "+OK" {
			return fmt.Errorf("AUTH: %q %v", ok, err)
		}
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return errors.New("unexpected reply " + strconv.Quote(line))
	}
	return nil
}

// freePort asks the kernel for a free 127.0.0.1 port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
