package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/ops"
)

// TestMetricsFollowOneFlow runs one approved flow with a held poll and
// checks the metrics each service reports about it.
func TestMetricsFollowOneFlow(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	stack := sys.stack
	pending := map[string]string{"state": "pending"}
	// startSystem left one pending code behind: the request that showed
	// the edge had loaded the extra client.
	waitFor(t, 5*time.Second, "the pending codes gauge to count the seeding code", func() bool {
		return metricValue(t, stack.Approver.Metrics(), "deviceauth_codes", pending) == 1
	})
	da := sys.authorize(devstack.DemoClientID, "profile")

	done := sys.pollInBackground(sys.URL, devstack.DemoClientID, da.DeviceCode, 20*time.Second)
	sys.waitForPoll(da.DeviceCode)
	waitFor(t, 5*time.Second, "the held polls gauge to reach 1", func() bool {
		return metricValue(t, stack.Edge.Metrics(), "deviceauth_edge_held_polls", nil) == 1
	})
	waitFor(t, 5*time.Second, "the pending codes gauge to reach 2", func() bool {
		return metricValue(t, stack.Approver.Metrics(), "deviceauth_codes", pending) == 2
	})

	sys.decide(da, "approve")
	if resp := <-done; resp.StatusCode != http.StatusOK {
		t.Fatalf("held poll: status %d: %s", resp.StatusCode, resp.Body)
	}
	assertOAuthError(t, sys.poll(otherClientID, da.DeviceCode, 0), http.StatusBadRequest, "invalid_grant")

	checks := []struct {
		name     string
		registry prometheus.Gatherer
		metric   string
		labels   map[string]string
		want     float64
	}{
		{"held polls back to zero", stack.Edge.Metrics(), "deviceauth_edge_held_polls", nil, 0},
		{"one poll answered with a token", stack.Edge.Metrics(), "deviceauth_edge_polls_total", map[string]string{"outcome": "token"}, 1},
		{"one poll answered invalid_grant", stack.Edge.Metrics(), "deviceauth_edge_polls_total", map[string]string{"outcome": "invalid_grant"}, 1},
		{"one approval-to-token sample at the edge", stack.Edge.Metrics(), "deviceauth_edge_approval_to_token_seconds", nil, 1},
		{"one approval-to-issue sample at the issuer", stack.Issuer.Metrics(), "deviceauth_issuer_approval_to_issue_seconds", nil, 1},
		{"one token issued", stack.Issuer.Metrics(), "deviceauth_issuer_tokens_issued_total", nil, 1},
		{"approver acknowledged one decision", stack.Approver.Metrics(), "deviceauth_worker_events_total", map[string]string{"consumer": events.ConsumerApprover, "outcome": "acked"}, 1},
		{"issuer acknowledged one approval", stack.Issuer.Metrics(), "deviceauth_worker_events_total", map[string]string{"consumer": events.ConsumerIssuer, "outcome": "acked"}, 1},
		{"the flow's code no longer pending", stack.Approver.Metrics(), "deviceauth_codes", pending, 1},
	}
	for _, c := range checks {
		waitFor(t, 5*time.Second, c.name, func() bool {
			return metricValue(t, c.registry, c.metric, c.labels) == c.want
		})
	}
	waitFor(t, 5*time.Second, "the code to count as redeemed", func() bool {
		return metricValue(t, stack.Approver.Metrics(), "deviceauth_codes", map[string]string{"state": "redeemed"}) == 1
	})

	// The debug listener renders the same registry as text.
	debug := httptest.NewServer(ops.Handler(stack.Metrics(), stack.Ready, false, zerolog.Nop()))
	t.Cleanup(debug.Close)
	body := get(t, debug.URL+ops.PathMetrics)
	for _, line := range []string{
		`deviceauth_edge_polls_total{outcome="token"} 1`,
		`deviceauth_issuer_approval_to_issue_seconds_count 1`,
		`deviceauth_codes{state="redeemed"} 1`,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics has no line %q", line)
		}
	}
	if status := statusOf(t, debug.URL+ops.PathPprof); status != http.StatusNotFound {
		t.Errorf("pprof with the profiler off: status %d, want 404", status)
	}
}

// TestDeadLetterCounted publishes a decision that can never decode and
// expects it on the dead-letter subject, with its reason, and counted.
func TestDeadLetterCounted(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	nc := sys.conn()
	dead := make(chan *nats.Msg, 1)
	if _, err := nc.ChanSubscribe(events.SubjectDeadLetter+"."+events.ConsumerApprover, dead); err != nil {
		t.Fatalf("subscribe to dead letters: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}

	if err := nc.Publish(events.Subject(events.SubjectDecision, "not-json"), []byte("{")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case msg := <-dead:
		if msg.Header.Get(events.DeadLetterReasonHeader) == "" {
			t.Error("dead letter has no reason header")
		}
		if got := msg.Header.Get(events.DeadLetterSubjectHeader); got != events.Subject(events.SubjectDecision, "not-json") {
			t.Errorf("dead letter subject header %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no dead letter after 10s")
	}
	labels := map[string]string{"consumer": events.ConsumerApprover}
	waitFor(t, 5*time.Second, "the dead letter to be counted", func() bool {
		return metricValue(t, sys.stack.Approver.Metrics(), "deviceauth_worker_dead_lettered_total", labels) == 1
	})
}

// TestReadinessFollowsNATS expects /readyz to pass while NATS is up and to
// fail with 503 once the server is gone, while /healthz stays 200.
func TestReadinessFollowsNATS(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	debug := httptest.NewServer(ops.Handler(sys.stack.Metrics(), sys.stack.Ready, true, zerolog.Nop()))
	t.Cleanup(debug.Close)

	for _, url := range []string{debug.URL + ops.PathReady, sys.URL + edge.PathReady} {
		if status := statusOf(t, url); status != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200 while NATS is up", url, status)
		}
	}
	if status := statusOf(t, debug.URL+ops.PathPprof); status != http.StatusOK {
		t.Errorf("pprof with the profiler on: status %d, want 200", status)
	}

	sys.stack.Server.Shutdown()
	for _, url := range []string{debug.URL + ops.PathReady, sys.URL + edge.PathReady} {
		waitFor(t, 10*time.Second, url+" to report not ready", func() bool {
			return statusOf(t, url) == http.StatusServiceUnavailable
		})
	}
	for _, url := range []string{debug.URL + ops.PathHealth, sys.URL + edge.PathHealth} {
		if status := statusOf(t, url); status != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200: the process is alive", url, status)
		}
	}
}

// metricValue returns the value of the series of name whose labels include
// labels: a counter's or gauge's value, a histogram's sample count. A series
// not yet created reads as zero.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, m := range family.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, pair := range m.GetLabel() {
		if v, ok := want[pair.GetName()]; ok && v == pair.GetValue() {
			found++
		}
	}
	return found == len(want)
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func statusOf(t *testing.T, url string) int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
