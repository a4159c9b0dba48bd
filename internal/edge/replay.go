package edge

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/kv"
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

	if err := e.revokeReplayed(ctx, log, codeID, rec, now); err != nil {
		return tokenAnswer{}, oauth.ErrServerError.WithCause(err)
	}
	return tokenAnswer{}, oauth.ErrInvalidGrant.WithDescription("The device code has already been used.")
}

// revokeReplayed marks the grant of a replayed code revoked, deletes its
// refresh token and announces the revocation. Each step is safe to repeat,
// so a later replay finishes what a failed one left undone.
func (e *Edge) revokeReplayed(ctx context.Context, log *zerolog.Logger, codeID string, rec events.CodeRecord, now time.Time) error {
	if rec.GrantID == "" {
		return nil
	}
	key := events.GrantKey(rec.AccountID, rec.GrantID)

	var grant events.Grant
	for {
		current, rev, err := e.grants.Get(ctx, key)
		if errors.Is(err, kv.ErrNotFound) {
			// The issuer writes the grant just after the code record and
			// has not yet, perhaps because it stopped in between. Creating
			// the grant already revoked keeps its redelivered event from
			// writing a live grant and refresh token later.
			grant = grantFromRecord(codeID, rec)
			grant.RevokedAt = now
			if _, err := e.grants.Create(ctx, key, grant); errors.Is(err, kv.ErrExists) {
				continue
			} else if err != nil {
				return err
			}
			break
		}
		if err != nil {
			return err
		}

		grant = current
		if !grant.RevokedAt.IsZero() {
			break
		}
		grant.RevokedAt = now
		if _, err := e.grants.Update(ctx, key, grant, rev); errors.Is(err, kv.ErrConflict) {
			continue
		} else if err != nil {
			return err
		}
		e.metrics.revokedReplays.Inc()
		log.Warn().Str("grant_id", grant.ID).Str("account_id", grant.AccountID).
			Msg("device code presented after the replay window; grant revoked")
		break
	}

	if grant.RefreshTokenID != "" {
		if err := e.refresh.Delete(ctx, grant.RefreshTokenID); err != nil {
			return err
		}
	}

	payload, err := events.Encode(events.GrantRevoked{
		GrantID:   grant.ID,
		AccountID: grant.AccountID,
		ClientID:  grant.ClientID,
		RevokedAt: grant.RevokedAt,
		Reason:    events.RevokeReasonReplay,
	})
	if err != nil {
		return err
	}
	// The message id makes a repeated announcement a duplicate the stream
	// drops.
	_, err = e.js.Publish(ctx, events.Subject(events.SubjectGrantRevoked, grant.ID), payload,
		jetstream.WithMsgID("revoked-"+grant.ID))
	return err
}

// grantFromRecord is the grant the issuer writes for an issued code.
func grantFromRecord(codeID string, rec events.CodeRecord) events.Grant {
	return events.Grant{
		ID:             rec.GrantID,
		CodeID:         codeID,
		ClientID:       rec.ClientID,
		AccountID:      rec.AccountID,
		Scopes:         rec.Scopes,
		CreatedAt:      rec.IssuedAt,
		AccessTokenID:  rec.AccessTokenID,
		RefreshTokenID: rec.RefreshTokenID,
		DeviceKind:     rec.DeviceKind,
	}
}
