package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/latchkey/latchkey/examples/portal"
	"github.com/latchkey/latchkey/internal/stack/stacktest"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// TestDomainMetrics scrapes /metrics after what an operator must see: Runs, a burst on
// an expired session (one login, the failing check), a login with a wrong password,
// warm browser contexts and the vault's work — each metric with its count.
func TestDomainMetrics(t *testing.T) {
	t.Parallel()
	w := newWorld(t, stacktest.Options{})
	sess := w.readySession(t) // login 1
	if run := w.wait(t, w.start(t, "list-invoices", sess.GetId(), nil).GetId()); run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
		t.Fatalf("first Run: %s", run.GetFailureMessage())
	}
	w.portal.ExpireSessions()
	const burst = 5
	for _, run := range w.waitAll(t, w.startMany(t, burst, "list-invoices", sess.GetId()), time.Minute) { // login 2
		if run.GetState() != latchkeyv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("burst Run %s: %s", run.GetState(), run.GetFailureMessage())
		}
	}
	bad, _ := w.createSession(t, latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS, map[string]string{"username": portal.AliceUsername, "password": "wrong"})
	w.waitSession(t, bad.GetId(), "EXPIRED", func(s *latchkeyv1.AuthSession) bool {
		return s.GetState() == latchkeyv1.SessionState_SESSION_STATE_EXPIRED
	})

	var m map[string]*dto.MetricFamily
	w.eventually(t, 30*time.Second, func() (bool, string) {
		var err error
		if m, err = scrape("http://" + w.st.HTTPAddr() + "/metrics"); err != nil {
			return false, err.Error()
		}
		// The failed login's Run ends just after the session turns EXPIRED.
		return sum(m, "latchkey_logins_total", map[string]string{"outcome": "failed"}) == 1, "no failed login counted yet"
	})
	exactly := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"latchkey_runs_total", map[string]string{"kind": "API", "state": "SUCCEEDED"}, 1 + burst},
		{"latchkey_logins_total", map[string]string{"outcome": "succeeded"}, 2},
		{"latchkey_logins_total", map[string]string{"outcome": "failed", "reason": "INVALID_CREDENTIALS"}, 1},
		{"latchkey_run_duration_seconds", map[string]string{"kind": "API"}, 1 + burst}, // the histogram's count
		{"latchkey_runner_tasks_in_flight", nil, 0},
		{"latchkey_session_recreate_duration_seconds", nil, 1}, // the burst's one recreate
		{"latchkey_sessions", map[string]string{"state": "READY"}, 1},
		{"latchkey_sessions", map[string]string{"state": "EXPIRED"}, 1},
		{"latchkey_sessions", map[string]string{"state": "RECREATING"}, 0},
		{"latchkey_login_budget_exhausted_total", nil, 0},
		{"latchkey_circuit_opened_total", nil, 0},
		{"latchkey_job_events_total", nil, 0},
		{"latchkey_jetstream_consumer_pending", map[string]string{"consumer": "scheduler-results"}, 0},
	}
	for _, c := range exactly {
		if got := sum(m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	atLeast := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"latchkey_checks_total", map[string]string{"outcome": "INVALID"}, 1},
		{"latchkey_checks_total", map[string]string{"outcome": "VALID"}, 1 + burst},
		{"latchkey_runs_total", map[string]string{"kind": "AUTHSESSION_CREATE", "state": "SUCCEEDED"}, 1},
		{"latchkey_run_queue_wait_seconds", map[string]string{"kind": "API"}, 1 + burst},
		{"latchkey_runner_tasks_total", map[string]string{"kind": "API", "status": "SUCCEEDED", "warm": "true"}, 1},
		{"latchkey_runner_warm_contexts", nil, 1},
		{"latchkey_runner_browsers", nil, 1},
		{"latchkey_runner_contexts", nil, 1},
		{"latchkey_runner_renderer_memory_bytes", nil, 1 << 20}, // a renderer holds megabytes
		{"latchkey_jetstream_consumer_pending", map[string]string{"consumer": "runner-default"}, 0},
		{"latchkey_jetstream_consumer_ack_pending", map[string]string{"consumer": "runner-default-login"}, 0},
		{"latchkey_vault_operations_total", map[string]string{"operation": "encrypt", "kind": "storage_state"}, 2},
		{"latchkey_vault_operations_total", map[string]string{"operation": "decrypt"}, 1},
		{"latchkey_vault_key_version", nil, 1},
	}
	for _, c := range atLeast {
		if got := sum(m, c.name, c.labels); got < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, got, c.min)
		}
	}
	// The list the alert rules and the dashboard are checked against (make lint) is
	// exactly what Latchkey exports.
	listed := map[string]bool{}
	b, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "latchkey-metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			listed[l] = true
			if _, ok := m[l]; !ok {
				t.Errorf("deploy/prometheus/latchkey-metrics.txt lists %s, which /metrics does not export", l)
			}
		}
	}
	for name := range m {
		if strings.HasPrefix(name, "latchkey_") && !listed[name] {
			t.Errorf("/metrics exports %s, missing from deploy/prometheus/latchkey-metrics.txt and docs/operations.md", name)
		}
	}
	// No run or session id ever becomes a label.
	for name, f := range m {
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetValue() == sess.GetId() || l.GetValue() == bad.GetId() {
					t.Errorf("%s carries a session id in label %s", name, l.GetName())
				}
			}
		}
	}
}

// scrape reads a Prometheus text exposition.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// sum adds the values of name's series whose labels include want: a counter's or a
// gauge's value, a histogram's count.
func sum(m map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := m[name]
	if !ok {
		return -1
	}
	total := 0.0
next:
	for _, metric := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range metric.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case metric.GetCounter() != nil:
			total += metric.GetCounter().GetValue()
		case metric.GetGauge() != nil:
			total += metric.GetGauge().GetValue()
		case metric.GetHistogram() != nil:
			total += float64(metric.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// waitMetric waits until the world's /metrics shows name{labels} summing to want.
func (w *world) waitMetric(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	w.eventually(t, 30*time.Second, func() (bool, string) {
		m, err := scrape("http://" + w.st.HTTPAddr() + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		got := sum(m, name, labels)
		return got == want, fmt.Sprintf("%s%v = %v, want %v", name, labels, got, want)
	})
}
