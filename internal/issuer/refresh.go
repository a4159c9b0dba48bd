package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// requestTimeout bounds the work on one refresh or rotation request.
const requestTimeout = 10 * time.Second

// serveRequests subscribes to the request subjects the issuer serves and
// returns a function that unsubscribes.
func (is *Issuer) serveRequests(ctx context.Context) (func(), error) {
	refreshSub, err := is.nc.QueueSubscribe(events.SubjectRefresh, events.QueueIssuers, func(msg *nats.Msg) {
		reqCtx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		is.reply(msg, is.handleRefresh(reqCtx, msg.Data))
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: subscribe to refresh requests: %w", err)
	}

	// Every issuer rotates its own key, so this subscription has no queue
	// group.
	rotateSub, err := is.nc.Subscribe(events.SubjectRotateKeys, func(msg *nats.Msg) {
		reqCtx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		kid, err := is.rotateKey(reqCtx)
		reply := events.RotateKeysReply{KeyID: kid}
		if err != nil {
			is.log.Error().Err(err).Msg("requested key rotation failed")
			reply = events.RotateKeysReply{Error: "key rotation failed; see the issuer's log"}
		}
		is.reply(msg, reply)
	})
	if err != nil {
		_ = refreshSub.Unsubscribe()
		return nil, fmt.Errorf("issuer: subscribe to rotation requests: %w", err)
	}

	return func() {
		_ = refreshSub.Drain()
		_ = rotateSub.Drain()
	}, nil
}

func (is *Issuer) reply(msg *nats.Msg, v any) {
	data, err := events.Encode(v)
	if err != nil {
		is.log.Error().Err(err).Msg("encoding a reply failed")
		return
	}
	if err := msg.Respond(data); err != nil {
		is.log.Warn().Err(err).Msg("sending a reply failed")
	}
}

// handleRefresh exchanges a refresh token for a new access token and a new
// refresh token (RFC 6749 section 6). Every refresh token works once: the
// old one is marked rotated by compare-and-set before the new tokens are
// minted. A rotated token presented again revokes the whole grant, because
// one of its two holders is not the client it was issued to.
func (is *Issuer) handleRefresh(ctx context.Context, data []byte) events.RefreshReply {
	var req events.RefreshRequest
	if err := events.Decode(data, &req); err != nil {
		return refreshError(oauth.ErrInvalidRequest)
	}
	log := is.log.With().Str("client_id", req.ClientID).Logger()

	reply, err := is.refreshGrant(ctx, log, req)
	if err != nil {
		oe := oauth.AsError(err)
		if oe.Status >= 500 {
			log.Error().Err(err).Msg("refresh failed")
		} else {
			log.Debug().Err(err).Msg("refresh rejected")
		}
		return refreshError(oe)
	}
	return reply
}

func refreshError(oe *oauth.Error) events.RefreshReply {
	return events.RefreshReply{Error: oe.Code, ErrorDescription: oe.Description}
}

func (is *Issuer) refreshGrant(ctx context.Context, log zerolog.Logger, req events.RefreshRequest) (events.RefreshReply, error) {
	invalid := oauth.ErrInvalidGrant.WithDescription("The refresh token is invalid, expired or revoked.")
	now := is.cfg.Now()

	old, rev, err := is.refresh.Get(ctx, req.RefreshTokenID)
	if errors.Is(err, kv.ErrNotFound) {
		return events.RefreshReply{}, invalid
	}
	if err != nil {
		return events.RefreshReply{}, err
	}
	if old.ClientID != req.ClientID {
		log.Warn().Str("token_client_id", old.ClientID).Msg("refresh token presented by another client")
		return events.RefreshReply{}, invalid
	}
	if !now.Before(old.ExpiresAt) {
		return events.RefreshReply{}, invalid
	}
	if !old.RotatedAt.IsZero() {
		revoked, err := is.revoker.Revoke(ctx, old.AccountID, old.GrantID, events.RevokeReasonReuse)
		if err != nil {
			return events.RefreshReply{}, err
		}
		if revoked {
			log.Warn().Str("grant_id", old.GrantID).Str("account_id", old.AccountID).Msg("rotated refresh token reused; grant revoked")
		}
		return events.RefreshReply{}, invalid
	}

	scopes := old.Scopes
	if len(req.Scopes) > 0 {
		for _, s := range req.Scopes {
			if !slices.Contains(old.Scopes, s) {
				return events.RefreshReply{}, oauth.ErrInvalidScope.WithDescription("Scope %q was not granted.", s)
			}
		}
		scopes = req.Scopes
	}

	grantKey := events.GrantKey(old.AccountID, old.GrantID)
	grant, _, err := is.grants.Get(ctx, grantKey)
	if errors.Is(err, kv.ErrNotFound) {
		return events.RefreshReply{}, invalid
	}
	if err != nil {
		return events.RefreshReply{}, err
	}
	if !grant.RevokedAt.IsZero() {
		return events.RefreshReply{}, invalid
	}

	// Winning this compare-and-set is what entitles this request to new
	// tokens. A concurrent request with the same token loses it and, on its
	// retry, finds the token rotated.
	old.RotatedAt = now
	if _, err := is.refresh.Update(ctx, req.RefreshTokenID, old, rev); errors.Is(err, kv.ErrConflict) {
		return is.refreshGrant(ctx, log, req)
	} else if err != nil {
		return events.RefreshReply{}, err
	}

	// NOTE: from here on the old token is spent. If minting fails or the
	// reply is lost, the client's retry with the old token counts as a
	// replay and revokes the grant, so the device must sign in again.
	response, newRefreshID, err := is.mint(ctx, &grant, scopes, now)
	if err != nil {
		return events.RefreshReply{}, err
	}
	if err := is.recordRefresh(ctx, grantKey, grant, now); err != nil {
		is.discardRefresh(ctx, log, newRefreshID)
		return events.RefreshReply{}, err
	}

	body, err := json.Marshal(response)
	if err != nil {
		return events.RefreshReply{}, fmt.Errorf("issuer: encode token response: %w", err)
	}
	log.Info().Str("grant_id", grant.ID).Str("account_id", grant.AccountID).Str("jti", grant.AccessTokenID).Msg("token refreshed")
	return events.RefreshReply{TokenResponse: body}, nil
}

// recordRefresh stores the new token ids and the time of use in the grant,
// by compare-and-set, unless the grant was revoked meanwhile.
func (is *Issuer) recordRefresh(ctx context.Context, key string, minted events.Grant, now time.Time) error {
	for {
		grant, rev, err := is.grants.Get(ctx, key)
		if err != nil {
			return err
		}
		if !grant.RevokedAt.IsZero() {
			return oauth.ErrInvalidGrant.WithDescription("The grant was revoked.")
		}
		grant.AccessTokenID = minted.AccessTokenID
		grant.RefreshTokenID = minted.RefreshTokenID
		grant.LastUsedAt = now
		_, err = is.grants.Update(ctx, key, grant, rev)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		return err
	}
}
