package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// drainTimeout bounds the wait, after the window, for tokens of approvals
// posted inside it. It is longer than the longest hold a client may ask for
// (55 s) plus a poll interval, so a slow plain poller still counts.
const drainTimeout = 70 * time.Second

// run is the state of one load run.
type run struct {
	cfg       Config
	client    *http.Client
	rec       *recorder
	codePacer *pacer
	queue     queue
	progress  io.Writer

	// waiting counts devices that have made their first poll on their first
	// code. ready is closed when it reaches cfg.Devices.
	waiting   atomic.Int64
	readyOnce sync.Once
	ready     chan struct{}
	// outstanding counts approvals posted whose token has not arrived.
	outstanding atomic.Int64
	// heldInFlight counts long polls sent whose response has not arrived.
	heldInFlight atomic.Int64
	// approvedTokens counts tokens received for approved devices over the
	// whole run, whether the approval fell inside the window or not.
	approvedTokens atomic.Int64
}

func (r *run) markWaiting() {
	if r.waiting.Add(1) == int64(r.cfg.Devices) {
		r.readyOnce.Do(func() { close(r.ready) })
	}
}

// Run drives the system at cfg.BaseURL and returns what it measured. It
// ramps up the fleet, measures for cfg.Duration, waits for the tokens of
// approvals posted in the window, and stops, within cfg.MaxRun in all.
// Progress lines go to progress.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("loadgen: invalid configuration: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxRun)
	defer cancel()

	transport := newTransport(cfg.Devices+cfg.Phones+16, sourceAddrs(cfg.Sources))
	defer transport.CloseIdleConnections()
	r := &run{
		cfg:       cfg,
		client:    &http.Client{Transport: transport, CheckRedirect: noRedirects},
		rec:       newRecorder(),
		codePacer: newPacer(cfg.CodeRate),
		progress:  progress,
		ready:     make(chan struct{}),
	}
	report := &Report{Config: cfg, Started: time.Now()}

	var storage *storageCounter
	if cfg.NATSURL != "" {
		var err error
		storage, err = startStorageCounter(cfg.NATSURL)
		if err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
		defer storage.close()
	}
	var edgeSampler *sampler
	if cfg.EdgePID != 0 {
		var err error
		edgeSampler, err = newSampler(cfg.EdgePID)
		if err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
	}
	selfSampler, err := newSampler(0)
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}

	var storageRampStart StorageOps
	if storage != nil {
		storageRampStart = storage.snapshot()
	}

	var phones []*phone
	if cfg.Mode != ModeAuthorize && cfg.ApprovalRate > 0 {
		for range cfg.Phones {
			ph, err := r.signIn(ctx)
			if err != nil {
				return nil, fmt.Errorf("loadgen: phone: %w", err)
			}
			phones = append(phones, ph)
		}
	}

	// The fleet.
	devicesCtx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	var devices sync.WaitGroup
	for range cfg.Devices {
		devices.Go(func() { r.runDevice(devicesCtx) })
	}
	if cfg.Mode == ModeAuthorize {
		r.readyOnce.Do(func() { close(r.ready) })
	}
	fmt.Fprintf(progress, "ramping up %d devices (%s mode)\n", cfg.Devices, cfg.Mode)
	select {
	case <-r.ready:
	case <-ctx.Done():
		stopDevices()
		devices.Wait()
		return nil, fmt.Errorf("loadgen: only %d of %d devices were waiting when the run hit its limit of %s", r.waiting.Load(), cfg.Devices, cfg.MaxRun)
	}
	report.Ramp = time.Since(report.Started)
	if storage != nil && cfg.Mode != ModeAuthorize {
		report.Settled = r.settle(ctx, storage, storageRampStart)
	}

	// The measured window.
	fmt.Fprintf(progress, "%d devices waiting after %s; measuring for %s\n", r.waiting.Load(), report.Ramp.Round(time.Millisecond), cfg.Duration)
	var storageStart StorageOps
	if storage != nil {
		storageStart = storage.snapshot()
	}
	var metricsBefore, metricsMid edgeScrape
	var heldMid int64
	scrape := func() (edgeScrape, bool) {
		got, err := scrapeEdge(ctx, http.DefaultClient, cfg.EdgeMetricsURL)
		if err != nil {
			r.rec.fail("edge metrics: " + err.Error())
			return edgeScrape{}, false
		}
		return got, true
	}
	metricsOK := cfg.EdgeMetricsURL != ""
	var tokensBefore int64
	if metricsOK {
		tokensBefore = r.approvedTokens.Load()
		metricsBefore, metricsOK = scrape()
	}
	edgeSampler.mark()
	selfSampler.mark()
	windowStart := time.Now()
	r.rec.measuring.Store(true)

	windowCtx, endWindow := context.WithTimeout(ctx, cfg.Duration)
	defer endWindow()
	var approvals sync.WaitGroup
	if len(phones) > 0 {
		approvals.Go(func() { r.postApprovals(windowCtx, ctx, phones) })
	}
	midDone := make(chan struct{})
	go func() {
		defer close(midDone)
		if !metricsOK || !sleepUntil(windowCtx, windowStart.Add(cfg.Duration/2)) {
			return
		}
		heldMid = r.heldInFlight.Load()
		metricsMid, _ = scrape()
	}()
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		edgeSampler.sampleEvery(windowCtx, time.Second)
	}()
	<-windowCtx.Done()

	r.rec.measuring.Store(false)
	report.Window = time.Since(windowStart)
	edgeSampler.mark()
	selfSampler.mark()
	if storage != nil {
		report.Storage = new(storage.snapshot().diff(storageStart))
	}
	<-samplerDone
	approvals.Wait()

	// Tokens for approvals posted in the window still count.
	drainUntil := time.Now().Add(drainTimeout)
	for r.outstanding.Load() > 0 && time.Now().Before(drainUntil) && ctx.Err() == nil {
		sleepUntil(ctx, time.Now().Add(10*time.Millisecond))
	}
	report.Undelivered = int(r.outstanding.Load())
	<-midDone
	if metricsOK {
		if metricsAfter, ok := scrape(); ok {
			tokens := int(r.approvedTokens.Load() - tokensBefore)
			report.Metrics = compareMetrics(metricsBefore, metricsAfter, metricsMid, heldMid, tokens, r.rec.samples(StepApprovalToToken))
		}
	}
	stopDevices()
	devices.Wait()

	report.Latencies, report.Counts, report.Errors = r.rec.summarize()
	report.Edge = edgeSampler.result()
	report.Self = selfSampler.result()
	report.derive()
	return report, nil
}

// postApprovals approves the longest-waiting device at cfg.ApprovalRate
// until window ends. Posts in flight finish under ctx.
func (r *run) postApprovals(window, ctx context.Context, phones []*phone) {
	pace := newPacer(r.cfg.ApprovalRate)
	inFlight := make(chan struct{}, 256)
	var posts sync.WaitGroup
	defer posts.Wait()

	for i := 0; ; i++ {
		if pace.wait(window) != nil {
			return
		}
		t := r.queue.pop()
		if t == nil {
			r.rec.count(CountNoDevice)
			continue
		}
		select {
		case inFlight <- struct{}{}:
		case <-window.Done():
			return
		}
		ph := phones[i%len(phones)]
		posts.Go(func() {
			defer func() { <-inFlight }()
			r.approve(ctx, ph, t)
		})
	}
}

// settleTimeout bounds the wait for the edge to store the ramp's polls.
const settleTimeout = 30 * time.Second

// settle waits until the edge has stored the first poll of every device,
// so that the window does not count the end of the ramp. A device is
// counted as waiting when it sends its first poll, but the edge may store
// that poll much later under load. Each device causes two writes to the
// codes bucket by then: the new code and its first poll's time. In long
// mode nothing else writes before a hold ends, so the count is exact. In
// plain mode later polls write too, so the window can open a little early.
// settle reports whether that many writes arrived within settleTimeout.
func (r *run) settle(ctx context.Context, storage *storageCounter, rampStart StorageOps) bool {
	want := 2 * r.cfg.Devices
	deadline := time.Now().Add(settleTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if storage.snapshot().diff(rampStart).Writes[codesBucket] >= want {
			return true
		}
		sleepUntil(ctx, time.Now().Add(20*time.Millisecond))
	}
	return false
}
