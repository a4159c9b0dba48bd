package worker

import "github.com/prometheus/client_golang/prometheus"

// Outcomes of one delivery, the values of the "outcome" label.
const (
	OutcomeAcked        = "acked"
	OutcomeRetried      = "retried"
	OutcomeDeadLettered = "dead_lettered"
	// OutcomeAckFailed is a message whose result was stored but whose
	// acknowledgement did not reach the server. It will be redelivered, and
	// the idempotent handler will find its work already done.
	OutcomeAckFailed = "ack_failed"
)

// Metrics counts what a worker does with each message. One Metrics serves
// every worker registered with the same registerer; the "consumer" label
// tells them apart.
type Metrics struct {
	consumed     *prometheus.CounterVec
	redeliveries *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	duration     *prometheus.HistogramVec
}

// NewMetrics creates the worker metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "deviceauth",
			Subsystem: "worker",
			Name:      "events_total",
			Help:      "Deliveries handled, by consumer and outcome (acked, retried, dead_lettered, ack_failed).",
		}, []string{"consumer", "outcome"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "deviceauth",
			Subsystem: "worker",
			Name:      "redeliveries_total",
			Help:      "Deliveries of a message that had been delivered before, by consumer.",
		}, []string{"consumer"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "deviceauth",
			Subsystem: "worker",
			Name:      "dead_lettered_total",
			Help:      "Messages published to the dead-letter subject, by consumer.",
		}, []string{"consumer"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "deviceauth",
			Subsystem: "worker",
			Name:      "handler_duration_seconds",
			Help:      "Time the handler took on one delivery, by consumer.",
			Buckets:   prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"consumer"}),
	}
	reg.MustRegister(m.consumed, m.redeliveries, m.deadLettered, m.duration)
	return m
}

// The methods accept a nil receiver, so a worker without metrics needs no
// checks at every call.

// start creates every counter series of consumer at zero, so that an alert
// on an increase also fires on the first redelivery or dead letter.
func (m *Metrics) start(consumer string) {
	if m == nil {
		return
	}
	for _, outcome := range []string{OutcomeAcked, OutcomeRetried, OutcomeDeadLettered, OutcomeAckFailed} {
		m.consumed.WithLabelValues(consumer, outcome)
	}
	m.redeliveries.WithLabelValues(consumer)
	m.deadLettered.WithLabelValues(consumer)
}

func (m *Metrics) outcome(consumer, outcome string) {
	if m != nil {
		m.consumed.WithLabelValues(consumer, outcome).Inc()
	}
}

func (m *Metrics) redelivered(consumer string) {
	if m != nil {
		m.redeliveries.WithLabelValues(consumer).Inc()
	}
}

func (m *Metrics) deadLetter(consumer string) {
	if m != nil {
		m.deadLettered.WithLabelValues(consumer).Inc()
	}
}

func (m *Metrics) handled(consumer string, seconds float64) {
	if m != nil {
		m.duration.WithLabelValues(consumer).Observe(seconds)
	}
}
