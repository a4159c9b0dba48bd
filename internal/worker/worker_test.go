package worker_test

import (
	"context"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/worker"
)

// TestStopFinishesMessageInHand stops a worker while its handler is busy:
// Run returns only after the handler finished, the message is acknowledged,
// and nothing published after the stop is consumed.
func TestStopFinishesMessageInHand(t *testing.T) {
	js := startJetStream(t)
	subject := events.Subject(events.SubjectDecision, "stop-test")

	registry := prometheus.NewRegistry()
	cfg := worker.Config{
		Durable:       "stop-test",
		FilterSubject: events.Subject(events.SubjectDecision, "*"),
		Metrics:       worker.NewMetrics(registry),
	}
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	var calls, finished atomic.Int32
	handler := func(ctx context.Context, _ zerolog.Logger, _ jetstream.Msg) error {
		calls.Add(1)
		started <- struct{}{}
		<-release
		finished.Add(1)
		return nil
	}

	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx, js, cfg, zerolog.Nop(), handler) }()

	if _, err := js.Publish(t.Context(), subject, []byte("{}")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called within 10s")
	}

	stop()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while the handler was still busy", err)
	default:
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of the handler finishing")
	}
	if got := finished.Load(); got != 1 {
		t.Errorf("handler finished %d times before Run returned, want 1", got)
	}

	// Published after the stop: it must wait for the next worker.
	if _, err := js.Publish(t.Context(), subject, []byte("{}")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	consumer, err := js.Consumer(t.Context(), events.StreamDevice, cfg.Durable)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	info, err := consumer.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	if info.AckFloor.Consumer != 1 || info.NumAckPending != 0 {
		t.Errorf("ack floor %d with %d pending, want the first message acknowledged and none pending", info.AckFloor.Consumer, info.NumAckPending)
	}
	if info.NumPending != 1 {
		t.Errorf("%d messages waiting after the stop, want the 1 published after it", info.NumPending)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("handler called %d times, want 1", got)
	}
	if got := ackedCount(t, registry); got != 1 {
		t.Errorf("acked deliveries counted %v, want 1", got)
	}
}

// TestCountersStartAtZero starts a worker that gets no message and expects
// its redelivery and dead-letter counters to exist at zero, so an alert on
// their increase fires on the first one.
func TestCountersStartAtZero(t *testing.T) {
	js := startJetStream(t)
	registry := prometheus.NewRegistry()
	cfg := worker.Config{
		Durable:       "zero-test",
		FilterSubject: events.Subject(events.SubjectDecision, "*"),
		Metrics:       worker.NewMetrics(registry),
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(ctx, js, cfg, zerolog.Nop(), func(context.Context, zerolog.Logger, jetstream.Msg) error { return nil })
	}()
	t.Cleanup(func() { stop(); <-done })

	want := []struct {
		name   string
		labels map[string]string
	}{
		{"deviceauth_worker_redeliveries_total", map[string]string{"consumer": "zero-test"}},
		{"deviceauth_worker_dead_lettered_total", map[string]string{"consumer": "zero-test"}},
		{"deviceauth_worker_events_total", map[string]string{"consumer": "zero-test", "outcome": worker.OutcomeDeadLettered}},
		{"deviceauth_worker_events_total", map[string]string{"consumer": "zero-test", "outcome": worker.OutcomeRetried}},
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, w := range want {
		value, found := counterValue(t, registry, w.name, w.labels)
		for !found && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			value, found = counterValue(t, registry, w.name, w.labels)
		}
		if !found {
			t.Errorf("no series %s %v", w.name, w.labels)
		} else if value != 0 {
			t.Errorf("%s %v = %v, want 0", w.name, w.labels, value)
		}
	}
}

// ackedCount returns the acknowledged deliveries counted for the
// stop-test consumer.
func ackedCount(t *testing.T, registry *prometheus.Registry) float64 {
	t.Helper()
	value, _ := counterValue(t, registry, "deviceauth_worker_events_total",
		map[string]string{"consumer": "stop-test", "outcome": worker.OutcomeAcked})
	return value
}

// counterValue returns the counter name with exactly labels, and whether
// the registry has that series.
func counterValue(t *testing.T, registry *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, m := range family.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if maps.Equal(got, labels) {
				return m.GetCounter().GetValue(), true
			}
		}
	}
	return 0, false
}

func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsinfra.StartEmbedded(natsinfra.EmbeddedConfig{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if _, err := natsinfra.EnsureStream(t.Context(), js, natsinfra.Settings{}); err != nil {
		t.Fatalf("ensure stream: %v", err)
	}
	return js
}
