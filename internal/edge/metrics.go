package edge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamco/deviceauth/internal/oauth"
)

// Poll outcomes that are not OAuth error codes. Every other outcome is the
// error code the poll was answered with.
const (
	outcomeToken    = "token"
	outcomeReplayed = "token_replayed"
	outcomeGone     = "client_gone"
)

type edgeMetrics struct {
	heldPolls       prometheus.Gauge
	polls           *prometheus.CounterVec
	approvalToToken prometheus.Histogram
	revokedReplays  prometheus.Counter
}

// latencyBuckets span a few milliseconds, the normal case for a held poll,
// to the minutes a device polling every few seconds after a redelivery may
// take.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

func newEdgeMetrics(reg prometheus.Registerer) edgeMetrics {
	m := edgeMetrics{
		heldPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "deviceauth",
			Subsystem: "edge",
			Name:      "held_polls",
			Help:      "Token requests this edge holds open while they wait for a code to change state.",
		}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "deviceauth",
			Subsystem: "edge",
			Name:      "polls_total",
			Help:      "Device code token requests answered, by outcome: token, token_replayed, client_gone or the OAuth error code.",
		}, []string{"outcome"}),
		approvalToToken: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "deviceauth",
			Subsystem: "edge",
			Name:      "approval_to_token_seconds",
			Help:      "Time from a person's decision (DecidedAt) to the token response leaving this edge.",
			Buckets:   latencyBuckets,
		}),
		revokedReplays: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "deviceauth",
			Subsystem: "edge",
			Name:      "replay_revocations_total",
			Help:      "Grants revoked because their device code was presented again after the replay window.",
		}),
	}
	reg.MustRegister(m.heldPolls, m.polls, m.approvalToToken, m.revokedReplays)
	return m
}

// pollOutcome is the outcome a device code poll is counted under.
func pollOutcome(err error, replayed bool) string {
	switch {
	case err != nil:
		return oauth.AsError(err).Code
	case replayed:
		return outcomeReplayed
	default:
		return outcomeToken
	}
}
