package testkit

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// JaegerServer is a Jaeger v2 process (memory storage) on random loopback ports.
type JaegerServer struct {
	// OTLP is the OTLP/gRPC receiver, as an OTEL_EXPORTER_OTLP_ENDPOINT value.
	OTLP string
	// Query is the query service's HTTP address (the UI and /api/traces).
	Query string
}

// jaegerConfig keeps Jaeger to what a test needs: OTLP/gRPC in, memory storage, the
// query API out, nothing on fixed ports (its own metrics are off).
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

// Jaeger starts the jaeger binary `make tools` builds (.tmp/bin/jaeger) and stops it
// when the test ends. It retries on another set of ports when one was taken meanwhile.
func Jaeger(t testing.TB) *JaegerServer {
	t.Helper()
	bin := Tool(t, "jaeger")
	dir := t.TempDir()
	var last error
	for try := range 3 {
		j, stop, err := startJaeger(bin, dir, try)
		if err == nil {
			t.Cleanup(stop)
			return j
		}
		last = err
	}
	t.Fatalf("testkit: starting jaeger: %v", last)
	return nil
}

// startJaeger starts one jaeger process and returns it with the function that stops it.
func startJaeger(bin, dir string, try int) (*JaegerServer, func(), error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		ports[i] = p
	}
	cfg := filepath.Join(dir, "jaeger-"+strconv.Itoa(try)+".yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, ports[0], ports[1], ports[2]), 0o600); err != nil {
		return nil, nil, err
	}
	logPath := filepath.Join(dir, "jaeger-"+strconv.Itoa(try)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("running %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	j := &JaegerServer{OTLP: "http://127.0.0.1:" + strconv.Itoa(ports[2]), Query: "http://127.0.0.1:" + strconv.Itoa(ports[0])}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if jaegerReady(j) {
			return j, func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
			}, nil
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(logPath)
			return nil, nil, fmt.Errorf("jaeger exited at start; its log:\n%s", strings.TrimSpace(string(out)))
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = cmd.Process.Kill()
	<-exited
	out, _ := os.ReadFile(logPath)
	return nil, nil, fmt.Errorf("jaeger not ready within 30s; its log:\n%s", strings.TrimSpace(string(out)))
}

func jaegerReady(j *JaegerServer) bool {
	resp, err := http.Get(j.Query + "/api/services")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(j.OTLP, "http://"), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
