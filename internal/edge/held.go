package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/oauth"
)

// changeBuffer is the capacity of the channel every held poll's
// subscription delivers to. nats.go drops a message that finds it full,
// and that poll then learns of the change when its hold ends.
const changeBuffer = 8192

// errClientGone ends a held poll whose client closed its connection.
var errClientGone = errors.New("the client closed the connection")

// decideTimeout bounds the storage work of deciding a held poll once it
// wakes, which no request context bounds when the poll is parked.
const decideTimeout = 10 * time.Second

// heldPoll is a token request waiting for its code to change state. It owns
// no goroutine while it waits: a subscription delivers the code's changes to
// the edge's shared channel, and a timer marks the end of the hold. Either
// one starts a short check that decides the poll again and, once the
// response is final, passes it to deliver. The done flag makes that happen
// once.
type heldPoll struct {
	e          *Edge
	sub        *nats.Subscription
	codeID     string
	clientID   string
	deviceCode string
	log        zerolog.Logger

	mu sync.Mutex
	// waiting is true from wait to the end of the poll: the timer runs,
	// the poll counts in the held-poll gauge and deliver is set.
	waiting  bool
	done     bool
	deadline time.Time
	timer    *time.Timer
	deliver  func(tokenAnswer, error)
	// clientGone reports whether the client closed its connection. It is
	// nil when the request's context reports that instead.
	clientGone func() bool
	// changed records a change that arrived before wait, so that wait
	// checks the code at once.
	changed bool
}

// pollRegister is the edge's register of held polls, by subscription.
type pollRegister struct {
	changes chan *nats.Msg

	mu     sync.Mutex
	bySub  map[*nats.Subscription]*heldPoll
	closed bool
}

func newPollRegister() *pollRegister {
	return &pollRegister{
		changes: make(chan *nats.Msg, changeBuffer),
		bySub:   make(map[*nats.Subscription]*heldPoll),
	}
}

// hold subscribes to the changes of a code before its record is read, so a
// change stored between the read and the wait still wakes the poll. The
// caller must end the poll with wait or drop.
func (e *Edge) hold(log zerolog.Logger, codeID, clientID, deviceCode string) (*heldPoll, error) {
	p := &heldPoll{e: e, codeID: codeID, clientID: clientID, deviceCode: deviceCode, log: log}
	h := e.polls
	// The subscription is made under the lock, so dispatchChanges finds the
	// poll for the first message as well.
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, oauth.ErrAuthorizationPending
	}
	sub, err := e.nc.ChanSubscribe(events.CodeChangedSubject(codeID), h.changes)
	if err != nil {
		return nil, oauth.ErrServerError.WithCause(err)
	}
	p.sub = sub
	h.bySub[sub] = p
	return p, nil
}

// wait starts the hold: deliver gets the poll's response once, when the
// code leaves the waiting states, when hold has passed, or when the edge
// stops. A non-nil clientGone is called before each decision. When it
// reports true, deliver gets errClientGone and the code is not read, so no
// token is redeemed for a closed connection.
func (p *heldPoll) wait(start time.Time, hold time.Duration, clientGone func() bool, deliver func(tokenAnswer, error)) {
	p.mu.Lock()
	if p.done {
		// The edge stopped between hold and wait.
		p.mu.Unlock()
		deliver(tokenAnswer{held: true}, oauth.ErrAuthorizationPending)
		return
	}
	p.waiting = true
	p.deadline = start.Add(hold)
	p.deliver = deliver
	p.clientGone = clientGone
	p.timer = time.AfterFunc(hold, func() { p.check(false, true) })
	p.e.metrics.heldPolls.Inc()
	changed := p.changed
	p.mu.Unlock()

	if changed {
		go p.check(true, false)
	}
}

// drop ends the poll without a response, because its first read decided it
// or its client went away.
func (p *heldPoll) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLocked()
}

// check decides the poll again after a change (changed) or at the end of the
// hold (expired), and delivers the response unless the poll keeps waiting.
func (p *heldPoll) check(changed, expired bool) {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	if !p.waiting {
		p.changed = p.changed || changed
		p.mu.Unlock()
		return
	}

	if p.clientGone != nil && p.clientGone() {
		p.finishLocked(tokenAnswer{}, errClientGone)
		return
	}
	response, pending, err := p.decide(changed)
	if pending && !expired && p.e.cfg.Now().Before(p.deadline) {
		p.mu.Unlock()
		return
	}
	p.finishLocked(response, err)
}

// decide reads the code and decides the poll, reading again while a change
// message leads the store. No handler's recoverer runs here, so a panic is
// logged and turned into server_error instead of ending the process.
func (p *heldPoll) decide(changed bool) (response tokenAnswer, pending bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.log.Error().Interface("panic", v).Msg("deciding a held poll panicked")
			response, pending, err = tokenAnswer{}, false, oauth.ErrServerError.WithCause(fmt.Errorf("panic: %v", v))
		}
	}()

	e := p.e
	ctx, cancel := context.WithTimeout(context.Background(), decideTimeout)
	defer cancel()
	response, pending, err = e.decidePoll(ctx, &p.log, p.codeID, p.clientID, p.deviceCode, e.cfg.Now(), false)
	if pending && changed {
		response, pending, err = e.readChange(ctx, &p.log, p.codeID, p.clientID, p.deviceCode)
	}
	return response, pending, err
}

// stop responds to a waiting poll with authorization_pending because the
// edge is stopping, so the device polls again elsewhere.
func (p *heldPoll) stop() {
	p.mu.Lock()
	if p.done || !p.waiting {
		p.endLocked()
		p.mu.Unlock()
		return
	}
	p.finishLocked(tokenAnswer{}, oauth.ErrAuthorizationPending)
}

// finishLocked ends the poll and delivers its response. It unlocks p.mu
// before delivering, which can write to the network.
func (p *heldPoll) finishLocked(response tokenAnswer, err error) {
	deliver := p.deliver
	p.endLocked()
	p.mu.Unlock()
	response.held = true
	deliver(response, err)
}

// endLocked releases the poll's subscription, timer and gauge once.
func (p *heldPoll) endLocked() {
	if p.done {
		return
	}
	p.done = true
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.waiting {
		p.e.metrics.heldPolls.Dec()
	}
	_ = p.sub.Unsubscribe()
	h := p.e.polls
	h.mu.Lock()
	delete(h.bySub, p.sub)
	h.mu.Unlock()
}

// dispatchChanges wakes the held poll of each change message that ends the
// wait, until ctx ends. A change to a state the poll keeps waiting in, such
// as approved or another poll's time, wakes nothing.
func (e *Edge) dispatchChanges(ctx context.Context) {
	h := e.polls
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-h.changes:
			h.mu.Lock()
			p := h.bySub[msg.Sub]
			h.mu.Unlock()
			if p == nil {
				continue
			}
			var rec events.CodeRecord
			if events.Decode(msg.Data, &rec) == nil && stillWaiting(rec.State) {
				continue
			}
			go p.check(true, false)
		}
	}
}

// stopHeld responds to every held poll with authorization_pending and
// rejects new holds.
func (e *Edge) stopHeld() {
	h := e.polls
	h.mu.Lock()
	h.closed = true
	polls := make([]*heldPoll, 0, len(h.bySub))
	for _, p := range h.bySub {
		polls = append(polls, p)
	}
	h.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range polls {
		wg.Go(p.stop)
	}
	wg.Wait()
}
