package approver

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
)

// stateExpired is the "state" label of a pending code past its expiry.
// Expiry is not a stored state (see events.CodeState), so it is computed at
// scrape time.
const stateExpired = "expired"

// codeStats follows every write to the codes bucket and reports how many
// codes are in each state. It lives in the approver because the approver
// already owns the pending-to-decided transition, and one or two approvers
// following the bucket cost far less than every edge doing so. Each approver
// reports the same cluster-wide numbers, so dashboards take the maximum
// across instances, not the sum.
type codeStats struct {
	now  func() time.Time
	desc *prometheus.Desc

	mu    sync.Mutex
	codes map[string]codeSummary
}

type codeSummary struct {
	state     events.CodeState
	expiresAt time.Time
}

func newCodeStats(now func() time.Time) *codeStats {
	return &codeStats{
		now: now,
		desc: prometheus.NewDesc("deviceauth_codes",
			"Device codes in the codes bucket by state; pending codes past their expiry count as expired.",
			[]string{"state"}, nil),
		codes: make(map[string]codeSummary),
	}
}

// follow loads the bucket and keeps following it until ctx ends.
func (s *codeStats) follow(ctx context.Context, bucket *kv.Bucket[events.CodeRecord]) error {
	return bucket.Watch(ctx, func(key string, rec events.CodeRecord, deleted bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if deleted {
			delete(s.codes, key)
			return
		}
		s.codes[key] = codeSummary{state: rec.State, expiresAt: rec.ExpiresAt}
	})
}

func (s *codeStats) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *codeStats) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{
		string(events.StatePending):  0,
		string(events.StateApproved): 0,
		string(events.StateDenied):   0,
		string(events.StateIssued):   0,
		string(events.StateRedeemed): 0,
		stateExpired:                 0,
	}
	now := s.now()

	s.mu.Lock()
	for _, c := range s.codes {
		state := string(c.state)
		if c.state == events.StatePending && !now.Before(c.expiresAt) {
			state = stateExpired
		}
		counts[state]++
	}
	s.mu.Unlock()

	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n), state)
	}
}
