package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/clients"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// expiryMargin is added to a hold that ends when its code expires, so the
// poll decided then finds the code expired.
const expiryMargin = 10 * time.Millisecond

// maxInterval caps how far slow_down can stretch a code's interval, so a
// client with a bad clock is slowed but never locked out.
const maxInterval = 60

// approvedGrace is the time after its expiry that an approved code still
// waits for the issuer instead of returning expired_token. The person
// approved in time, so the device should get its token.
const approvedGrace = 2 * time.Minute

// token handles token requests (RFC 6749 section 3.2) for the device code
// grant (RFC 8628 section 3.4) and the refresh token grant (RFC 6749
// section 6). Device code requests are counted as polls by outcome.
func (e *Edge) token(w http.ResponseWriter, r *http.Request) (err error) {
	isPoll := true
	var answer tokenAnswer
	defer func() {
		if !isPoll {
			return
		}
		outcome := pollOutcome(err, answer.replayed)
		if r.Context().Err() != nil {
			outcome = outcomeGone
		}
		e.metrics.polls.WithLabelValues(outcome).Inc()
	}()

	form, err := parseForm(w, r)
	if err != nil {
		return err
	}

	grantType := form.Get("grant_type")
	switch grantType {
	case "":
		return oauth.ErrInvalidRequest.WithDescription("grant_type is missing.")
	case oauth.GrantTypeDeviceCode:
	case oauth.GrantTypeRefreshToken:
		isPoll = false
	default:
		return oauth.ErrUnsupportedGrantType.WithDescription("Grant type %q is not supported.", grantType)
	}

	client, err := e.authenticateClient(r, form)
	if err != nil {
		return err
	}
	if grantType == oauth.GrantTypeDeviceCode && client.DeviceFlowDisabled {
		return oauth.ErrUnauthorizedClient.WithDescription("The device authorization grant is switched off for this client.")
	}
	if !clients.AllowsGrant(client, grantType) {
		return oauth.ErrUnauthorizedClient.WithDescription("This client may not use grant type %q.", grantType)
	}
	if grantType == oauth.GrantTypeRefreshToken {
		return e.refreshToken(w, r, form, client)
	}

	deviceCode := form.Get("device_code")
	if deviceCode == "" {
		return oauth.ErrInvalidRequest.WithDescription("device_code is missing.")
	}
	if codes.CheckDeviceCode(deviceCode) != nil {
		return oauth.ErrInvalidGrant.WithDescription("The device code is not valid.")
	}

	hold := e.requestedHold(r)
	answer, err = e.pollDeviceCode(w, r, client.ID, deviceCode, hold)
	if errors.Is(err, errParked) {
		// The held poll writes its own response and counts itself.
		isPoll = false
		return nil
	}
	if answer.held {
		setPreferenceApplied(w.Header(), hold)
	}
	if err != nil {
		return err
	}
	oauth.WriteTokenResponse(w, answer.body)
	return nil
}

// writePollAnswer writes a held poll's response to a writer that no handler
// returns to, logging an error as oauthHandler does.
func (e *Edge) writePollAnswer(w http.ResponseWriter, log *zerolog.Logger, answer tokenAnswer, hold time.Duration, err error) {
	if answer.held {
		setPreferenceApplied(w.Header(), hold)
	}
	if err != nil {
		writeOAuthError(w, log, err)
		return
	}
	oauth.WriteTokenResponse(w, answer.body)
}

// setPreferenceApplied names the wait preference that was honoured, and
// only when it was (RFC 7240 section 3).
func setPreferenceApplied(h http.Header, hold time.Duration) {
	h.Set("Preference-Applied", "wait="+strconv.Itoa(int(hold/time.Second)))
}

// tokenAnswer is a token response about to leave the edge.
type tokenAnswer struct {
	body []byte
	// replayed is true when the response was sent before and is sent again
	// within the replay window.
	replayed bool
	// held is true when the poll waited for a change, with or without an
	// error to send.
	held bool
	// expires is when a pending answer's code expires, so a hold ends
	// with expired_token then rather than at its full length.
	expires time.Time
}

// pollDeviceCode decides one poll. It returns the token response to send,
// or the OAuth error to respond with, and whether the poll was held. It
// returns errParked when it took the connection over to hold the poll
// outside the handler (see park), and the held poll then responds.
//
// A held poll subscribes to the code's change subject before it reads the
// record, so a change stored between the read and the wait still wakes it.
// It then waits without reading storage, because each change arrives as the
// new record itself.
func (e *Edge) pollDeviceCode(w http.ResponseWriter, r *http.Request, clientID, deviceCode string, hold time.Duration) (tokenAnswer, error) {
	ctx := r.Context()
	codeID := e.hasher.CodeID(deviceCode)
	log := zerolog.Ctx(ctx).With().Str("client_id", clientID).Str("code_id", codes.LogID(codeID)).Logger()

	var held *heldPoll
	if hold > 0 {
		var err error
		if held, err = e.hold(log, codeID, clientID, deviceCode); err != nil {
			return tokenAnswer{}, err
		}
	}

	now := e.cfg.Now()
	first, pending, err := e.decidePoll(ctx, &log, codeID, clientID, deviceCode, now, true)
	if !pending || held == nil {
		if held != nil {
			held.drop()
		}
		return first, err
	}

	// The hold ends when the code expires, if that comes first.
	timeout := hold
	if !first.expires.IsZero() {
		timeout = max(min(hold, first.expires.Sub(now)+expiryMargin), 0)
	}
	if pc, ok := e.park(w, r, log); ok {
		held.wait(now, timeout, pc.closedByClient, func(answer tokenAnswer, err error) {
			e.answerParked(pc, answer, hold, err)
		})
		return tokenAnswer{}, errParked
	}

	type result struct {
		answer tokenAnswer
		err    error
	}
	done := make(chan result, 1)
	held.wait(now, timeout, nil, func(answer tokenAnswer, err error) { done <- result{answer, err} })
	select {
	case res := <-done:
		return res.answer, res.err
	case <-ctx.Done():
		held.drop()
		return tokenAnswer{held: true}, ctx.Err()
	}
}

// readChange reads a code again after its change subject announced a state
// that ends the wait but the first read still found it waiting. The
// announcement is the write as published: a subscriber can receive it before
// the stream has stored it (a replicated bucket's leader stores it only once
// a quorum has it), and receives writes the stream rejected too. It reads
// again after 1, 2, 4 … 512 ms, about a second in all, before it concludes
// the write was rejected and keeps waiting.
func (e *Edge) readChange(ctx context.Context, log *zerolog.Logger, codeID, clientID, deviceCode string) (tokenAnswer, bool, error) {
	delay := time.Millisecond
	for {
		wait := time.NewTimer(delay)
		select {
		case <-wait.C:
		case <-e.closing:
			wait.Stop()
			return tokenAnswer{}, false, oauth.ErrAuthorizationPending
		case <-ctx.Done():
			wait.Stop()
			return tokenAnswer{}, false, ctx.Err()
		}

		response, pending, err := e.decidePoll(ctx, log, codeID, clientID, deviceCode, e.cfg.Now(), false)
		if !pending || delay >= 512*time.Millisecond {
			return response, pending, err
		}
		delay *= 2
	}
}

// stillWaiting reports whether a held poll keeps waiting when the code is in
// state: an approved code has no token yet, so the wait goes on until the
// issuer stores one.
func stillWaiting(state events.CodeState) bool {
	return state == events.StatePending || state == events.StateApproved
}

// decidePoll reads the code record and decides the poll. When counted is
// true the poll is subject to the interval and records its start. pending
// reports whether the answer is authorization_pending, which a held poll
// turns into a wait.
//
// Every write is a compare-and-set on the revision read. A lost race re-reads
// and decides again, so two racing polls can never both redeem a code.
func (e *Edge) decidePoll(ctx context.Context, log *zerolog.Logger, codeID, clientID, deviceCode string, now time.Time, counted bool) (answer tokenAnswer, pending bool, err error) {
	for {
		rec, rev, err := e.codes.Get(ctx, codeID)
		if errors.Is(err, kv.ErrNotFound) {
			return tokenAnswer{}, false, oauth.ErrInvalidGrant.WithDescription("The device code is not valid.")
		}
		if err != nil {
			return tokenAnswer{}, false, oauth.ErrServerError.WithCause(err)
		}

		// RFC 8628 section 3.4 binds the device code to the client it was
		// issued to.
		if rec.ClientID != clientID {
			log.Warn().Str("code_client_id", rec.ClientID).Msg("device code presented by another client")
			return tokenAnswer{}, false, oauth.ErrInvalidGrant.WithDescription("The device code was not issued to this client.")
		}

		var expires time.Time
		switch rec.State {
		case events.StateIssued:
			response, err := e.redeem(ctx, log, codeID, deviceCode, rec, rev, now)
			if errors.Is(err, kv.ErrConflict) {
				continue
			}
			return response, false, err

		case events.StateRedeemed:
			answer, err := e.replay(ctx, log, codeID, deviceCode, rec, now)
			return answer, false, err

		case events.StateDenied:
			return tokenAnswer{}, false, oauth.ErrAccessDenied

		case events.StateApproved:
			expires = rec.ExpiresAt.Add(approvedGrace)
			if !now.Before(expires) {
				return tokenAnswer{}, false, oauth.ErrExpiredToken
			}

		case events.StatePending:
			expires = rec.ExpiresAt
			if !now.Before(expires) {
				return tokenAnswer{}, false, oauth.ErrExpiredToken
			}

		default:
			return tokenAnswer{}, false, oauth.ErrServerError.WithCause(fmt.Errorf("code in unknown state %q", rec.State))
		}

		if !counted {
			return tokenAnswer{expires: expires}, true, oauth.ErrAuthorizationPending
		}

		interval := time.Duration(rec.IntervalSeconds) * time.Second
		tolerance := min(e.cfg.PollTolerance, interval/5)
		if !rec.LastPollAt.IsZero() && now.Sub(rec.LastPollAt) < interval-tolerance {
			// RFC 8628 section 3.5: the client must add five seconds to its
			// interval, and so does the record, so every edge expects the
			// same. The start of the rejected poll is not recorded, so a
			// client that slows down is never punished twice.
			rec.IntervalSeconds = min(rec.IntervalSeconds+5, maxInterval)
			if _, err := e.codes.Update(ctx, codeID, rec, rev); errors.Is(err, kv.ErrConflict) {
				continue
			} else if err != nil {
				return tokenAnswer{}, false, oauth.ErrServerError.WithCause(err)
			}
			log.Debug().Int("interval", rec.IntervalSeconds).Msg("poll too soon; slowing down")
			return tokenAnswer{}, false, oauth.ErrSlowDown
		}

		rec.LastPollAt = now
		if _, err := e.codes.Update(ctx, codeID, rec, rev); errors.Is(err, kv.ErrConflict) {
			continue
		} else if err != nil {
			return tokenAnswer{}, false, oauth.ErrServerError.WithCause(err)
		}
		return tokenAnswer{expires: expires}, true, oauth.ErrAuthorizationPending
	}
}

// redeem marks an issued code redeemed and returns its token response. The
// mark is stored before the token is opened or sent, so when two polls race
// only the one whose compare-and-set wins ever sees the token. It returns
// kv.ErrConflict when it lost that race.
func (e *Edge) redeem(ctx context.Context, log *zerolog.Logger, codeID, deviceCode string, rec events.CodeRecord, rev uint64, now time.Time) (tokenAnswer, error) {
	rec.State = events.StateRedeemed
	rec.RedeemedAt = now
	if _, err := e.codes.Update(ctx, codeID, rec, rev); err != nil {
		if errors.Is(err, kv.ErrConflict) {
			return tokenAnswer{}, err
		}
		return tokenAnswer{}, oauth.ErrServerError.WithCause(err)
	}

	response, err := codes.Open(deviceCode, rec.SealedToken)
	if err != nil {
		return tokenAnswer{}, oauth.ErrServerError.WithCause(err)
	}
	if !rec.DecidedAt.IsZero() {
		e.metrics.approvalToToken.Observe(e.cfg.Now().Sub(rec.DecidedAt).Seconds())
	}
	log.Info().Str("grant_id", rec.GrantID).Dur("since_approval_ms", now.Sub(rec.DecidedAt)).Msg("token delivered")
	return tokenAnswer{body: response}, nil
}

// requestedHold returns how long the client asked to be held with
// "Prefer: wait=N" (RFC 7240 section 4.3), capped by MaxHold. A request
// without the preference is answered at once.
func (e *Edge) requestedHold(r *http.Request) time.Duration {
	if e.cfg.MaxHold <= 0 {
		return 0
	}
	seconds, ok := preferWait(r.Header.Values("Prefer"))
	if !ok || seconds <= 0 {
		return 0
	}
	// Compare in seconds first: a huge wait would overflow a Duration.
	if time.Duration(seconds) > e.cfg.MaxHold/time.Second {
		return e.cfg.MaxHold
	}
	return time.Duration(seconds) * time.Second
}
