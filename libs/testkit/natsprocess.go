package testkit

import (
	"bufio"
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
	natsProcessStartTimeout = 10 * time.Second
	natsProcessStartTries   = 3
	// debianNATSServer is where Debian's nats-server package puts the binary,
	// outside a normal user's PATH.
	debianNATSServer = "/usr/sbin/nats-server"
)

// NATSProcess is a nats-server running as a process of its own, started by
// StartNATSProcess.
type NATSProcess struct {
	// URL is the server's nats:// client URL.
	URL string

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	once   sync.Once
}

// Stop kills the server and waits until it has exited. It is safe to call more
// than once; the test's cleanup calls it too.
func (p *NATSProcess) Stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
}

// SystemNATSServer is the path of the nats-server the system's packages installed:
// Debian's /usr/sbin/nats-server (2.9 on Debian 12, older than Latchkey needs, which
// is what tests of the version check want), else one on PATH. Debian's comes first:
// `make tools` puts a current nats-server in .tmp/bin, which make adds to PATH. It
// fails the test when there is none.
func SystemNATSServer(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat(debianNATSServer); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return debianNATSServer
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	t.Fatalf("testkit: nats-server not found on PATH nor at %s: %s", debianNATSServer, installHint)
	return ""
}

// StartNATSProcess runs the nats-server binary bin as a process with JetStream on a
// free 127.0.0.1 port, storing under a temporary directory, waits until it greets
// clients, and kills it when the test ends. args are added to its command line.
func StartNATSProcess(t testing.TB, bin string, args ...string) *NATSProcess {
	t.Helper()
	dir := t.TempDir()
	var lastErr error
	// Another process may take the free port between our probe and the
	// server's bind; try again on a new port then.
	for try := range natsProcessStartTries {
		p, err := startNATSProcess(bin, dir, try, args)
		if err == nil {
			t.Cleanup(p.Stop)
			return p
		}
		lastErr = err
	}
	t.Fatalf("testkit: starting %s: %v", bin, lastErr)
	return nil
}

func startNATSProcess(bin, dir string, try int, args []string) (*NATSProcess, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "nats-"+strconv.Itoa(try)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log file: %w", err)
	}
	defer logFile.Close()
	store := filepath.Join(dir, "store-"+strconv.Itoa(try))
	cmd := exec.Command(bin, append([]string{
		"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", store,
	}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := &NATSProcess{URL: "nats://" + addr, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()

	why := fmt.Sprintf("did not greet a client within %s", natsProcessStartTimeout)
	deadline := time.Now().Add(natsProcessStartTimeout)
wait:
	for time.Now().Before(deadline) {
		if greets(addr) {
			return p, nil
		}
		select {
		case <-p.exited:
			why = "exited at start"
			break wait
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.Stop()
	out, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("nats-server on %s %s; its log:\n%s", addr, why, strings.TrimSpace(string(out)))
}

// greets tells whether a NATS server at addr sends its INFO line.
func greets(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "INFO ")
}

// Tool is the path of a command-line tool `make tools` builds into .tmp/bin (which
// make puts on PATH), such as grpcurl. It fails the test when there is none.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("testkit: %s is not on PATH: run `make tools` (it builds .tmp/bin/%s), or run the tests through make", name, name)
	return ""
}
