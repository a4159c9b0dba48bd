package issuer

import "github.com/prometheus/client_golang/prometheus"

type issuerMetrics struct {
	issued          prometheus.Counter
	approvalToIssue prometheus.Histogram
}

// latencyBuckets span a few milliseconds, the normal case, to the tens of
// seconds a redelivery after a crashed worker takes.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newIssuerMetrics(reg prometheus.Registerer) issuerMetrics {
	m := issuerMetrics{
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "deviceauth",
			Subsystem: "issuer",
			Name:      "tokens_issued_total",
			Help:      "Token responses stored for a device code; a lost compare-and-set is not counted.",
		}),
		approvalToIssue: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "deviceauth",
			Subsystem: "issuer",
			Name:      "approval_to_issue_seconds",
			Help:      "Time from a person's decision (DecidedAt) to the stored token response (IssuedAt).",
			Buckets:   latencyBuckets,
		}),
	}
	reg.MustRegister(m.issued, m.approvalToIssue)
	return m
}
