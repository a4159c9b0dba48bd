package loadgen

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Steps whose latency a run records.
const (
	StepDeviceAuthorization = "device authorization"
	StepPoll                = "poll round trip, answered at once"
	StepHeldPoll            = "poll round trip, held"
	StepApprovalPost        = "approval post"
	StepApprovalToToken     = "approval to token"
	StepSignIn              = "phone sign-in"
)

// stepOrder is the order steps appear in a report.
var stepOrder = []string{StepDeviceAuthorization, StepPoll, StepHeldPoll, StepApprovalPost, StepApprovalToToken, StepSignIn}

// recorder collects latencies by step and counts outcomes and errors. A
// step counts toward latencies and throughput when it completes inside the
// measured window, except approval to token, which counts when its approval
// was posted inside the window. Errors count over the whole run.
type recorder struct {
	measuring atomic.Bool

	mu        sync.Mutex
	latencies map[string][]time.Duration
	counts    map[string]int
	errors    map[string]int
}

func newRecorder() *recorder {
	return &recorder{
		latencies: make(map[string][]time.Duration),
		counts:    make(map[string]int),
		errors:    make(map[string]int),
	}
}

// latency records one sample of step that has just completed, if the
// window is open.
func (r *recorder) latency(step string, d time.Duration) {
	r.latencyIf(r.measuring.Load(), step, d)
}

// latencyIf records one sample of step if inWindow is true.
func (r *recorder) latencyIf(inWindow bool, step string, d time.Duration) {
	if !inWindow {
		return
	}
	r.mu.Lock()
	r.latencies[step] = append(r.latencies[step], d)
	r.mu.Unlock()
}

// count adds one to an outcome that has just happened, if the window is
// open.
func (r *recorder) count(outcome string) {
	r.countIf(r.measuring.Load(), outcome)
}

// countIf adds one to outcome if inWindow is true.
func (r *recorder) countIf(inWindow bool, outcome string) {
	if !inWindow {
		return
	}
	r.mu.Lock()
	r.counts[outcome]++
	r.mu.Unlock()
}

// samples returns a copy of the latencies recorded for step.
func (r *recorder) samples(step string) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.latencies[step])
}

// fail counts one error of kind, inside or outside the window.
func (r *recorder) fail(kind string) {
	r.mu.Lock()
	r.errors[kind]++
	r.mu.Unlock()
}

// Latency is the distribution of one step's latencies.
type Latency struct {
	Step  string
	Count int
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	Max   time.Duration
}

func (r *recorder) summarize() (latencies []Latency, counts, errs map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, step := range stepOrder {
		samples := r.latencies[step]
		if len(samples) == 0 {
			continue
		}
		sorted := slices.Clone(samples)
		slices.Sort(sorted)
		latencies = append(latencies, Latency{
			Step:  step,
			Count: len(sorted),
			P50:   percentile(sorted, 50),
			P90:   percentile(sorted, 90),
			P99:   percentile(sorted, 99),
			Max:   sorted[len(sorted)-1],
		})
	}
	return latencies, clone(r.counts), clone(r.errors)
}

func clone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// percentile returns the p-th percentile of sorted by the nearest-rank
// method: the smallest value that at least p percent of values do not
// exceed.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}
