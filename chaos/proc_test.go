//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one supervised child process: started, killed with SIGKILL and started again
// with the same command line, so with the same ports and data directory, as a
// container is restarted. It runs in a process group of its own, and a kill takes the
// whole group (a runner's Chromium dies with it, as in a container).
type proc struct {
	name string
	path string
	args []string
	env  []string
	// logPath collects stdout and stderr of every start, each start under a marker.
	logPath string
	// healthy reports nil once the process serves; nil: started is enough.
	healthy func(ctx context.Context) error

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current start has exited
	killed bool          // the current start was killed on purpose
	starts int
	// died lists exits nobody asked for, for the test's final check.
	died []string
}

// start launches the process. It does not wait for it to be healthy.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.exited:
		default:
			return fmt.Errorf("%s: already running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: opening its log: %w", p.name, err)
	}
	p.starts++
	fmt.Fprintf(f, "=== chaos: start #%d of %s at %s\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: starting %s: %w", p.name, p.path, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.killed = cmd, exited, false
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		if !p.killed {
			p.died = append(p.died, fmt.Sprintf("%s (pid %d, start #%d) exited on its own at %s: %v",
				p.name, cmd.Process.Pid, p.starts, time.Now().Format("15:04:05.000"), err))
		}
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// pid is the current start's process id, 0 if it is not running.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// kill sends SIGKILL to the process group and waits until the process is reaped.
func (p *proc) kill() error { return p.signal(syscall.SIGKILL, 10*time.Second) }

// stop asks the process to shut down (SIGTERM), and kills it if it has not exited
// within grace. For cleanup.
func (p *proc) stop(grace time.Duration) {
	if p.signal(syscall.SIGTERM, grace) != nil {
		_ = p.kill()
	}
}

func (p *proc) signal(sig syscall.Signal, wait time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil {
		p.mu.Unlock()
		return nil
	}
	p.killed = true
	p.mu.Unlock()
	select {
	case <-exited:
		return nil
	default:
	}
	// The group: the process and whatever it started (Chromium) that kept the group.
	// Chromium's helpers may leave the group, so a kill also takes every process
	// below it, found before the kill (after it they belong to init).
	var below []int
	if sig == syscall.SIGKILL {
		below, _ = descendants(cmd.Process.Pid, "")
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s: %s: %w", p.name, sig, err)
	}
	for _, pid := range below {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s: still running %s after %s", p.name, wait, sig)
	}
}

// waitHealthy polls healthy until it answers nil, the process exits, or timeout.
func (p *proc) waitHealthy(ctx context.Context, timeout time.Duration) error {
	if p.healthy == nil {
		return nil
	}
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = p.healthy(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited before it was healthy (last check: %v); its log ends:\n%s", p.name, last, tailFile(p.logPath, 30))
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy within %s: %v; its log ends:\n%s", p.name, timeout, last, tailFile(p.logPath, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unexpectedExits lists the exits nobody asked for.
func (p *proc) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.died...)
}

// httpOK is a health check: GET url answers 200.
func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// freePort asks the kernel for a free 127.0.0.1 port. The port is chosen once per
// process and kept across restarts.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// tailFile returns the last n lines of the file at path.
func tailFile(path string, n int) string { return grepTail(path, n) }

// grepTail returns the last n lines of the file at path that contain any of words
// (every line when there are none).
func grepTail(path string, n int, words ...string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if len(words) > 0 && !slices.ContainsFunc(words, func(w string) bool { return strings.Contains(sc.Text(), w) }) {
			continue
		}
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append(lines[:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// descendants returns the processes below pid (children, their children, ...) whose
// command name contains substr, read from /proc.
func descendants(pid int, substr string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	parent := map[int]int{}
	comm := map[int]string{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		start, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if start < 0 || end < start {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(fields[1])
		parent[p], comm[p] = pp, s[start+1:end]
	}
	var out []int
	for p := range parent {
		for a := parent[p]; a > 1; a = parent[a] {
			if a == pid {
				if strings.Contains(comm[p], substr) {
					out = append(out, p)
				}
				break
			}
		}
	}
	return out, nil
}
