package loadgen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/oauth"
)

// Outcomes counted inside the measured window.
const (
	CountAuthorizations = "device authorizations"
	CountPolls          = "token polls"
	CountPending        = "token polls answered authorization_pending"
	CountSlowDown       = "token polls answered slow_down"
	CountExpired        = "token polls answered expired_token"
	CountTokens         = "tokens received"
	CountApprovals      = "approvals posted"
	CountNoDevice       = "approvals skipped: no device waiting"
)

// ticket is a waiting device as the phones see it: the user code to
// approve, and when the approval was sent so the device can time it.
type ticket struct {
	userCode string
	// approvedAt is the Unix time in nanoseconds at which the approval post
	// was sent, or 0 before that.
	approvedAt atomic.Int64
	// approvedInWindow is set with approvedAt: the approval started inside
	// the measured window.
	approvedInWindow atomic.Bool
	// done is set once the device stops waiting on this code.
	done atomic.Bool
}

// queue is the first-in, first-out line of waiting devices that the
// phones approve, so each device waits about Devices/ApprovalRate seconds.
type queue struct {
	mu      sync.Mutex
	tickets []*ticket
}

func (q *queue) push(t *ticket) {
	q.mu.Lock()
	q.tickets = append(q.tickets, t)
	q.mu.Unlock()
}

// pop returns the oldest ticket whose device still waits, or nil.
func (q *queue) pop() *ticket {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.tickets) > 0 {
		t := q.tickets[0]
		q.tickets[0] = nil
		q.tickets = q.tickets[1:]
		if !t.done.Load() {
			return t
		}
	}
	return nil
}

// runDevice is one device: request a code, wait for its token, and start
// again, until ctx ends. In ModeAuthorize it only requests codes.
func (r *run) runDevice(ctx context.Context) {
	for ctx.Err() == nil {
		if r.codePacer.wait(ctx) != nil {
			return
		}
		da, ok := r.authorize(ctx)
		if !ok {
			// Back off briefly so a failing edge is not hammered in a
			// tight loop.
			sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
			continue
		}
		if r.cfg.Mode == ModeAuthorize {
			continue
		}
		r.waitForToken(ctx, da)
	}
}

// authorize sends one device authorization request (RFC 8628 section 3.1).
func (r *run) authorize(ctx context.Context) (oauth.DeviceAuthorizationResponse, bool) {
	var da oauth.DeviceAuthorizationResponse
	form := url.Values{"client_id": {r.cfg.ClientID}}
	if r.cfg.Scope != "" {
		form.Set("scope", r.cfg.Scope)
	}

	start := time.Now()
	res, err := postForm(ctx, r.client, r.cfg.BaseURL, edge.PathDeviceAuthorization, form, nil)
	if err != nil {
		if ctx.Err() == nil {
			r.rec.fail(transportKind("device authorization", err))
		}
		return da, false
	}
	if res.status != http.StatusOK {
		r.rec.fail(responseKind("device authorization", res))
		return da, false
	}
	if err := json.Unmarshal(res.body, &da); err != nil || da.DeviceCode == "" || da.UserCode == "" {
		r.rec.fail("device authorization: response without codes")
		return da, false
	}

	r.rec.latency(StepDeviceAuthorization, res.done.Sub(start))
	r.rec.count(CountAuthorizations)
	return da, true
}

// waitForToken polls for the token of da until it arrives, the code
// expires, an error ends the wait, or ctx ends. Each poll starts at least
// the interval after the start of the previous one (RFC 8628 section 3.5),
// so a held poll that ends after its hold is followed by the next at once.
func (r *run) waitForToken(ctx context.Context, da oauth.DeviceAuthorizationResponse) {
	t := &ticket{userCode: da.UserCode}
	defer t.done.Store(true)

	interval := time.Duration(da.Interval) * time.Second
	form := url.Values{
		"grant_type":  {oauth.GrantTypeDeviceCode},
		"client_id":   {r.cfg.ClientID},
		"device_code": {da.DeviceCode},
	}
	var header http.Header
	if r.cfg.Mode == ModeLong {
		header = http.Header{"Prefer": {"wait=" + strconv.Itoa(r.cfg.Wait)}}
	}

	var lastStart time.Time
	for {
		if !lastStart.IsZero() && !sleepUntil(ctx, lastStart.Add(interval)) {
			return
		}
		if lastStart.IsZero() {
			r.queue.push(t)
			r.markWaiting()
		}

		start := time.Now()
		if header != nil {
			r.heldInFlight.Add(1)
		}
		res, err := postForm(ctx, r.client, r.cfg.BaseURL, edge.PathToken, form, header)
		if header != nil {
			r.heldInFlight.Add(-1)
		}
		lastStart = start
		if err != nil {
			if ctx.Err() == nil {
				r.rec.fail(transportKind("token", err))
			}
			return
		}

		step := StepPoll
		if res.header.Get("Preference-Applied") != "" {
			step = StepHeldPoll
		}
		r.rec.latency(step, res.done.Sub(start))
		r.rec.count(CountPolls)

		if res.status == http.StatusOK {
			r.rec.count(CountTokens)
			if at := t.approvedAt.Load(); at != 0 {
				r.approvedTokens.Add(1)
				r.rec.latencyIf(t.approvedInWindow.Load(), StepApprovalToToken, res.done.Sub(time.Unix(0, at)))
				r.outstanding.Add(-1)
			}
			return
		}
		switch oauthError(res.body) {
		case oauth.CodeAuthorizationPending:
			r.rec.count(CountPending)
		case oauth.CodeSlowDown:
			r.rec.count(CountSlowDown)
			interval += 5 * time.Second
		case oauth.CodeExpiredToken:
			r.rec.count(CountExpired)
			return
		default:
			r.rec.fail(responseKind("token", res))
			return
		}
	}
}

// sleepUntil waits until t or until ctx ends, and reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pacer spaces events evenly at a rate shared by many goroutines.
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	next  time.Time
}

// newPacer returns a pacer for rate events per second, or nil, which never
// waits, for rate 0.
func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{every: time.Duration(float64(time.Second) / rate)}
}

// wait blocks until the caller's slot. A pacer that fell behind does not
// catch up with a burst: the next slot is never earlier than now.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return ctx.Err()
	}
	p.mu.Lock()
	slot := time.Now()
	if p.next.After(slot) {
		slot = p.next
	}
	p.next = slot.Add(p.every)
	p.mu.Unlock()
	if !sleepUntil(ctx, slot) {
		return ctx.Err()
	}
	return nil
}
