package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names of the edge that a run compares with its own measurements.
const (
	metricHeldPolls       = "deviceauth_edge_held_polls"
	metricApprovalToToken = "deviceauth_edge_approval_to_token_seconds"
)

// edgeScrape holds the values a run reads from the edge's /metrics.
type edgeScrape struct {
	heldPolls float64
	// buckets maps a histogram upper bound in seconds to its cumulative
	// count; count is the total number of observations.
	buckets map[float64]uint64
	count   uint64
}

// scrapeEdge reads the edge's metrics in the Prometheus text format.
func scrapeEdge(ctx context.Context, client *http.Client, metricsURL string) (edgeScrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return edgeScrape{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return edgeScrape{}, fmt.Errorf("scrape %s: %w", metricsURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return edgeScrape{}, fmt.Errorf("scrape %s: status %d", metricsURL, resp.StatusCode)
	}

	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return edgeScrape{}, fmt.Errorf("scrape %s: %w", metricsURL, err)
	}

	out := edgeScrape{buckets: map[float64]uint64{}}
	if f, ok := families[metricHeldPolls]; ok && len(f.GetMetric()) > 0 {
		out.heldPolls = f.GetMetric()[0].GetGauge().GetValue()
	}
	if f, ok := families[metricApprovalToToken]; ok && len(f.GetMetric()) > 0 {
		h := f.GetMetric()[0].GetHistogram()
		out.count = h.GetSampleCount()
		for _, b := range h.GetBucket() {
			out.buckets[b.GetUpperBound()] = b.GetCumulativeCount()
		}
	}
	return out, nil
}

// MetricsCheck sets the edge's own metrics beside what the run measured.
type MetricsCheck struct {
	// HeldPollsEdge is the edge's held-poll gauge and HeldPollsLoad the
	// long polls the run had in flight, read at the same moment in the
	// middle of the window.
	HeldPollsEdge float64
	HeldPollsLoad int64
	// TokensEdge is the number of approval-to-token observations the edge
	// made between the scrapes before the window and after the drain, and
	// TokensLoad the tokens the run received for approved devices between
	// the same two moments.
	TokensEdge uint64
	TokensLoad int
	// Fractions compares, for each bucket bound of the edge's histogram up
	// to one second, the share of approvals whose token came within it.
	Fractions []BucketShare
}

// BucketShare is the share of approvals within one latency bound.
type BucketShare struct {
	Bound time.Duration
	Edge  float64
	Load  float64
}

// compareMetrics builds the check from the scrapes, the run's counts and its
// approval-to-token samples, which cover approvals posted in the window.
func compareMetrics(before, after edgeScrape, mid edgeScrape, heldLoad int64, tokensLoad int, samples []time.Duration) *MetricsCheck {
	check := &MetricsCheck{
		HeldPollsEdge: mid.heldPolls,
		HeldPollsLoad: heldLoad,
		TokensEdge:    after.count - before.count,
		TokensLoad:    tokensLoad,
	}
	bounds := make([]float64, 0, len(after.buckets))
	for bound := range after.buckets {
		if bound <= 1 {
			bounds = append(bounds, bound)
		}
	}
	sort.Float64s(bounds)
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	for _, bound := range bounds {
		share := BucketShare{Bound: time.Duration(bound * float64(time.Second))}
		if check.TokensEdge > 0 {
			share.Edge = float64(after.buckets[bound]-before.buckets[bound]) / float64(check.TokensEdge)
		}
		if len(sorted) > 0 {
			within, _ := slices.BinarySearch(sorted, share.Bound+1)
			share.Load = float64(within) / float64(len(sorted))
		}
		check.Fractions = append(check.Fractions, share)
	}
	return check
}

// print writes the check as a table.
func (c *MetricsCheck) print(w io.Writer) {
	fmt.Fprintln(w, "edge metrics against the load:")
	fmt.Fprintf(w, "  held polls mid-window: edge gauge %.0f, load in flight %d\n", c.HeldPollsEdge, c.HeldPollsLoad)
	fmt.Fprintf(w, "  approvals answered with a token: edge histogram %d, load %d\n", c.TokensEdge, c.TokensLoad)
	fmt.Fprintf(w, "  %-10s %10s %10s %12s\n", "within", "edge", "load", "difference")
	for _, s := range c.Fractions {
		fmt.Fprintf(w, "  %-10s %9.1f%% %9.1f%% %+11.1f pt\n", s.Bound, 100*s.Edge, 100*s.Load, 100*(s.Load-s.Edge))
	}
}
