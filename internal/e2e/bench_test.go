package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// benchHoldSeconds is the "Prefer: wait" of the measured device's poll, the
// edge's default MaxHold.
const benchHoldSeconds = 20

// benchHoldTimeout bounds the wait for the edge to record a poll. Reaching
// it means the edge is broken, not slow.
const benchHoldTimeout = 30 * time.Second

// BenchmarkApprovalToToken measures how long a device that holds a token
// poll waits for its token after the approval: from the publish of the
// decision event, as the consent page sends it, to the last byte of the held
// poll's response. Each iteration requests a fresh device code, because the
// edge rejects a second poll within the interval with slow_down.
//
// The idle=N variants first put N other devices into held polls on codes
// that are never approved, and keep them held until the end.
func BenchmarkApprovalToToken(b *testing.B) {
	var dataDir string
	sys := startSystem(b, func(cfg *devstack.Config) { dataDir = cfg.DataDir })
	bench := newApprovalBench(b, sys, dataDir)

	for _, idle := range []int{0, 1000} {
		b.Run("idle="+strconv.Itoa(idle), func(b *testing.B) {
			bench.run(b, idle)
		})
	}
}

// approvalBench drives devices and approvals against one running system.
type approvalBench struct {
	sys    *system
	nc     *nats.Conn
	js     jetstream.JetStream
	hasher *codes.Hasher
	// account approves every measured code, as the demo user would.
	account events.Account
}

func newApprovalBench(b *testing.B, sys *system, dataDir string) *approvalBench {
	b.Helper()

	key, err := keyfile.Read(filepath.Join(dataDir, "hash.key"))
	if err != nil {
		b.Fatalf("read hash key: %v", err)
	}
	hasher, err := codes.NewHasher(key)
	if err != nil {
		b.Fatalf("create hasher: %v", err)
	}

	nc := sys.conn()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatalf("open JetStream: %v", err)
	}
	bucket, err := js.KeyValue(b.Context(), events.BucketAccounts)
	if err != nil {
		b.Fatalf("open accounts bucket: %v", err)
	}
	account, _, err := kv.New[events.Account](bucket).Get(b.Context(), accounts.NormalizeUsername(devstack.DemoUsername))
	if err != nil {
		b.Fatalf("read demo account: %v", err)
	}

	return &approvalBench{sys: sys, nc: nc, js: js, hasher: hasher, account: account}
}

// run measures approval-to-token latency while idle other devices hold
// polls.
func (a *approvalBench) run(b *testing.B, idle int) {
	ctx := b.Context()
	device := newBenchClient(2)

	idleCtx, stopIdle := context.WithCancel(ctx)
	idleDevices := &sync.WaitGroup{}
	idleErrs := make(chan error, idle)
	if idle > 0 {
		start := time.Now()
		a.startIdleDevices(b, idleCtx, idleDevices, idleErrs, idle)
		b.Logf("%d idle devices hold polls after %s", idle, time.Since(start).Round(time.Millisecond))
	}

	var approvals []approval
	for b.Loop() {
		approvals = append(approvals, a.approveOne(b, ctx, device))
	}

	stopIdle()
	idleDevices.Wait()
	close(idleErrs)
	if stopped := len(idleErrs); stopped > 0 {
		b.Errorf("%d of %d idle devices stopped holding before the end; first: %v", stopped, idle, <-idleErrs)
	}
	a.report(b, approvals)
}

// approval is the outcome of one measured iteration.
type approval struct {
	codeID string
	// latency runs from the publish of the decision to the last byte of
	// the token response.
	latency time.Duration
	// byTimer is true when the token came only after the hold had run its
	// full length. Then the code's change did not wake the held poll, and
	// the edge found the token when the hold's timer fired.
	// The edge reads the record again when it lags the change message, so
	// this should not happen; the metric shows it if it does.
	byTimer bool
}

// approveOne requests a code, holds a poll on it, approves it and waits for
// the token.
func (a *approvalBench) approveOne(b *testing.B, ctx context.Context, client *http.Client) approval {
	b.Helper()

	da, err := requestCode(ctx, client, a.sys.URL)
	if err != nil {
		b.Fatal(err)
	}
	codeID := a.hasher.CodeID(da.DeviceCode)
	result, polledAt, err := a.startHeldPoll(ctx, client, da.DeviceCode, codeID, benchHoldSeconds)
	if err != nil {
		b.Fatal(err)
	}

	payload, err := events.Encode(events.Decision{
		CodeID:    codeID,
		Approved:  true,
		AccountID: a.account.ID,
		Username:  a.account.Username,
		DecidedAt: a.sys.clock.Now(),
	})
	if err != nil {
		b.Fatal(err)
	}
	published := time.Now()
	if _, err := a.js.Publish(ctx, events.Subject(events.SubjectDecision, codeID), payload); err != nil {
		b.Fatalf("publish decision: %v", err)
	}

	res := <-result
	if res.err != nil {
		b.Fatalf("held poll: %v", res.err)
	}
	var token oauth.TokenResponse
	if res.status != http.StatusOK || json.Unmarshal(res.body, &token) != nil || token.AccessToken == "" {
		b.Fatalf("held poll returned status %d without an access token: %s", res.status, res.body)
	}
	return approval{
		codeID:  codeID,
		latency: res.received.Sub(published),
		byTimer: !res.received.Before(polledAt.Add(benchHoldSeconds * time.Second)),
	}
}

// startIdleDevices puts n devices into held polls on codes that are never
// approved and returns once the edge has recorded every first poll. Each
// device polls again when its hold ends, and requests a new code when its
// code expires, until ctx ends. A device that gets any other response stops
// and sends the reason on errs.
//
// Holds range from 10 to 20 seconds so that the polls that follow the first
// ones spread over time instead of arriving in one burst.
func (a *approvalBench) startIdleDevices(b *testing.B, ctx context.Context, wg *sync.WaitGroup, errs chan<- error, n int) {
	b.Helper()

	client := newBenchClient(n)
	for i := range n {
		hold := 10 + i%11
		da, err := requestCode(ctx, client, a.sys.URL)
		if err != nil {
			b.Fatalf("idle device %d: %v", i, err)
		}
		result, _, err := a.startHeldPoll(ctx, client, da.DeviceCode, a.hasher.CodeID(da.DeviceCode), hold)
		if err != nil {
			b.Fatalf("idle device %d: %v", i, err)
		}

		wg.Go(func() {
			if err := a.keepHolding(ctx, client, da.DeviceCode, hold, result); err != nil {
				errs <- fmt.Errorf("idle device %d: %w", i, err)
			}
		})
	}
}

// keepHolding polls again each time a held poll of an idle device ends,
// until ctx ends. It returns nil when ctx ends, and an error for any
// response other than authorization_pending or expired_token.
func (a *approvalBench) keepHolding(ctx context.Context, client *http.Client, deviceCode string, hold int, result <-chan pollResult) error {
	for {
		var res pollResult
		select {
		case res = <-result:
		case <-ctx.Done():
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if res.err != nil {
			return fmt.Errorf("token request: %w", res.err)
		}

		switch code := bodyErrorCode(res.body); {
		case res.status == http.StatusBadRequest && code == oauth.CodeAuthorizationPending:
		case res.status == http.StatusBadRequest && code == oauth.CodeExpiredToken:
			da, err := requestCode(ctx, client, a.sys.URL)
			if err != nil {
				return err
			}
			deviceCode = da.DeviceCode
		default:
			return fmt.Errorf("token request returned status %d: %s", res.status, res.body)
		}
		result = sendPoll(ctx, client, a.sys.URL, deviceCode, hold)
	}
}

// startHeldPoll sends a token request with "Prefer: wait=hold" and returns
// once the edge has recorded the poll. The edge subscribes to the code's
// changes before it records the poll, so from then on a decision reaches
// the held request. The channel delivers the response, and polledAt is the
// start of the poll as the edge recorded it, from which the hold runs.
func (a *approvalBench) startHeldPoll(ctx context.Context, client *http.Client, deviceCode, codeID string, hold int) (result <-chan pollResult, polledAt time.Time, err error) {
	changes := make(chan *nats.Msg, 16)
	sub, err := a.nc.ChanSubscribe(events.CodeChangedSubject(codeID), changes)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("subscribe to code changes: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The server must have the subscription before the edge can write the
	// record, or the write that shows the poll could be missed.
	if err := a.nc.FlushTimeout(benchHoldTimeout); err != nil {
		return nil, time.Time{}, fmt.Errorf("flush subscription: %w", err)
	}

	sent := sendPoll(ctx, client, a.sys.URL, deviceCode, hold)
	timeout := time.NewTimer(benchHoldTimeout)
	defer timeout.Stop()
	for {
		select {
		case msg := <-changes:
			var rec events.CodeRecord
			if err := events.Decode(msg.Data, &rec); err != nil {
				return nil, time.Time{}, err
			}
			if !rec.LastPollAt.IsZero() {
				return sent, rec.LastPollAt, nil
			}
		case res := <-sent:
			if res.err != nil {
				return nil, time.Time{}, fmt.Errorf("held poll: %w", res.err)
			}
			return nil, time.Time{}, fmt.Errorf("held poll returned before the edge recorded it: status %d: %s", res.status, res.body)
		case <-timeout.C:
			return nil, time.Time{}, fmt.Errorf("edge did not record the poll within %s", benchHoldTimeout)
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		}
	}
}

// pollResult is the outcome of one token request.
type pollResult struct {
	status int
	body   []byte
	// received is when the last byte of the body was read.
	received time.Time
	err      error
}

// sendPoll sends a token request with "Prefer: wait=hold" in a goroutine
// and returns a channel that delivers its result.
func sendPoll(ctx context.Context, client *http.Client, baseURL, deviceCode string, hold int) <-chan pollResult {
	result := make(chan pollResult, 1)
	go func() {
		form := deviceCodeForm(devstack.DemoClientID, deviceCode)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+edge.PathToken, strings.NewReader(form.Encode()))
		if err != nil {
			result <- pollResult{err: err}
			return
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Prefer", "wait="+strconv.Itoa(hold))

		resp, err := client.Do(req)
		if err != nil {
			result <- pollResult{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		result <- pollResult{status: resp.StatusCode, body: body, received: time.Now(), err: err}
	}()
	return result
}

// requestCode sends a device authorization request for the demo client.
func requestCode(ctx context.Context, client *http.Client, baseURL string) (oauth.DeviceAuthorizationResponse, error) {
	var da oauth.DeviceAuthorizationResponse
	form := url.Values{"client_id": {devstack.DemoClientID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+edge.PathDeviceAuthorization, strings.NewReader(form.Encode()))
	if err != nil {
		return da, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")

	resp, err := client.Do(req)
	if err != nil {
		return da, fmt.Errorf("device authorization: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return da, fmt.Errorf("device authorization: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return da, fmt.Errorf("device authorization: status %d, want 200: %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &da); err != nil {
		return da, fmt.Errorf("device authorization: decode response: %w", err)
	}
	return da, nil
}

// bodyErrorCode returns the "error" member of an OAuth error response, or
// "" when body is not one.
func bodyErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error
}

// newBenchClient returns an HTTP client that keeps up to conns idle
// connections to the edge, so devices reuse connections instead of opening
// one per request.
func newBenchClient(conns int) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = conns
	transport.MaxIdleConnsPerHost = conns
	return &http.Client{Transport: transport}
}

// report computes the 50th, 90th and 99th percentiles and the maximum of
// the latencies in milliseconds, and counts the tokens that came only when
// the hold ended. It reports them as metrics and in the log, with the stored
// timeline of the slowest approval.
func (a *approvalBench) report(b *testing.B, approvals []approval) {
	if len(approvals) == 0 {
		return
	}

	latencies := make([]time.Duration, len(approvals))
	byTimer := 0
	slowest := approvals[0]
	for i, ap := range approvals {
		latencies[i] = ap.latency
		if ap.byTimer {
			byTimer++
		}
		if ap.latency > slowest.latency {
			slowest = ap
		}
	}
	slices.Sort(latencies)

	metrics := []struct {
		unit  string
		value time.Duration
	}{
		{"p50-ms", percentile(latencies, 50)},
		{"p90-ms", percentile(latencies, 90)},
		{"p99-ms", percentile(latencies, 99)},
		{"max-ms", latencies[len(latencies)-1]},
	}
	var line strings.Builder
	fmt.Fprintf(&line, "%d approvals, latency in ms:", len(latencies))
	for _, m := range metrics {
		ms := float64(m.value) / float64(time.Millisecond)
		b.ReportMetric(ms, m.unit)
		fmt.Fprintf(&line, " %s %.2f", strings.TrimSuffix(m.unit, "-ms"), ms)
	}
	b.ReportMetric(float64(byTimer), "timer-wakes")
	fmt.Fprintf(&line, "; %d tokens sent only when the hold ended", byTimer)
	b.Log(line.String())

	rec, _, err := a.sys.codeBucket().Get(b.Context(), slowest.codeID)
	if err != nil {
		b.Logf("read slowest code record: %v", err)
		return
	}
	// IssuedAt is when the issuer began to mint, before it signed and
	// stored the token.
	b.Logf("slowest approval %.2f ms: issuer began minting %.2f ms after the decision, edge redeemed %.2f ms after that",
		float64(slowest.latency)/float64(time.Millisecond),
		float64(rec.IssuedAt.Sub(rec.DecidedAt))/float64(time.Millisecond),
		float64(rec.RedeemedAt.Sub(rec.IssuedAt))/float64(time.Millisecond))
}

// percentile returns the p-th percentile of sorted by the nearest-rank
// method: the smallest value that at least p percent of values do not
// exceed.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}
