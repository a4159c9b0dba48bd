package edge

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/oauth"
)

// replay handles a device code presented again after it was redeemed, by
// the client it was issued to (decidePoll has checked that).
//
// A held poll's response can be cut after the code was marked redeemed: an
// edge dies, a proxy drops the connection. Within ReplayWindow of the
// redemption the device gets the identical response again, opened from the
// sealed token the record keeps, so it is not stranded without a token that
// no one will ever use. Only a holder of the device code can open that
// token, so the window gives nothing to a reader of the bucket. After the
// window a presentation is treated as a leaked code, as RFC 6749 section
// 4.1.2 treats a reused authorization code: it is invalid_grant and the grant
// is revoked, with its refresh token.
func (e *Edge) replay(ctx context.Context, log *zerolog.Logger, codeID, deviceCode string, rec events.CodeRecord, now time.Time) (tokenAnswer, error) {
	if e.cfg.ReplayWindow > 0 && len(rec.SealedToken) > 0 && now.Before(rec.RedeemedAt.Add(e.cfg.ReplayWindow)) {
		response, err := codes.Open(deviceCode, rec.SealedToken)
		if err != nil {
			return tokenAnswer{}, oauth.ErrServerError.WithCause(err)
		}
		log.Info().Str("grant_id", rec.GrantID).Dur("since_redemption", now.Sub(rec.RedeemedAt)).
			Msg("token response sent again within the replay window")
		return tokenAnswer{body: response, replayed: true}, nil
	}

	if err := e.revokeReplayed(ctx, log, codeID, rec); err != nil {
		return tokenAnswer{}, oauth.ErrServerError.WithCause(err)
	}
	return tokenAnswer{}, oauth.ErrInvalidGrant.WithDescription("The device code has already been used.")
}

// revokeReplayed revokes the grant of a code presented after the replay
// window. Each step is safe to repeat, so a later replay finishes what a
// failed one left undone.
func (e *Edge) revokeReplayed(ctx context.Context, log *zerolog.Logger, codeID string, rec events.CodeRecord) error {
	if err := e.revoker.RevokeCode(ctx, codeID, rec, events.RevokeReasonReplay); err != nil {
		return err
	}
	e.metrics.revokedReplays.Inc()
	log.Warn().Str("grant_id", rec.GrantID).Str("account_id", rec.AccountID).
		Msg("device code presented after the replay window; grant revoked")
	return nil
}
