// Package grants revokes a grant: the one place that marks it revoked,
// deletes its refresh token and announces the revocation, whether the person,
// the client (RFC 7009) or a replayed refresh token asked for it.
package grants

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
)

// FromCode returns the grant the issuer writes for an issued code, built
// from the token ids the code record keeps. There is one grant per code.
func FromCode(codeID string, rec events.CodeRecord) events.Grant {
	return events.Grant{
		ID:             rec.GrantID,
		CodeID:         codeID,
		ClientID:       rec.ClientID,
		AccountID:      rec.AccountID,
		Username:       rec.Username,
		Scopes:         rec.Scopes,
		CreatedAt:      rec.IssuedAt,
		AccessTokenID:  rec.AccessTokenID,
		RefreshTokenID: rec.RefreshTokenID,
		DeviceKind:     rec.DeviceKind,
	}
}

// Revoker revokes grants.
type Revoker struct {
	Grants  *kv.Bucket[events.Grant]
	Refresh *kv.Bucket[events.RefreshToken]
	JS      jetstream.JetStream
	Now     func() time.Time
}

// Revoke marks the grant revoked by compare-and-set, deletes its current
// refresh token and publishes events.GrantRevoked with reason, one of the
// events.RevokeReason constants. It returns false when there is no such
// grant. A grant already marked revoked goes through the last two steps
// again, so a revocation cut short by a crash completes on a retry, and the
// message id keeps the event from being stored twice.
func (r *Revoker) Revoke(ctx context.Context, accountID, grantID, reason string) (bool, error) {
	return r.revoke(ctx, events.GrantKey(accountID, grantID), nil, reason)
}

// RevokeCode revokes the grant of an issued code. When the issuer has not
// written the grant yet, perhaps because it stopped in between, the grant is
// created already revoked, so the issuer's redelivered event cannot bring
// back a live grant and refresh token later.
func (r *Revoker) RevokeCode(ctx context.Context, codeID string, rec events.CodeRecord, reason string) error {
	if rec.GrantID == "" {
		return nil
	}
	grant := FromCode(codeID, rec)
	_, err := r.revoke(ctx, events.GrantKey(rec.AccountID, rec.GrantID), &grant, reason)
	return err
}

func (r *Revoker) revoke(ctx context.Context, key string, missing *events.Grant, reason string) (bool, error) {
	var grant events.Grant
	for {
		current, rev, err := r.Grants.Get(ctx, key)
		if errors.Is(err, kv.ErrNotFound) {
			if missing == nil {
				return false, nil
			}
			grant = *missing
			grant.RevokedAt = r.Now()
			if _, err := r.Grants.Create(ctx, key, grant); errors.Is(err, kv.ErrExists) {
				continue
			} else if err != nil {
				return false, err
			}
			break
		}
		if err != nil {
			return false, err
		}

		grant = current
		if !grant.RevokedAt.IsZero() {
			break
		}
		grant.RevokedAt = r.Now()
		if _, err := r.Grants.Update(ctx, key, grant, rev); errors.Is(err, kv.ErrConflict) {
			continue
		} else if err != nil {
			return false, err
		}
		break
	}

	// The grant is marked revoked, so a failure below leaves a refresh
	// token that the refresh grant rejects anyway.
	if grant.RefreshTokenID != "" {
		if err := r.Refresh.Delete(ctx, grant.RefreshTokenID); err != nil {
			return true, err
		}
	}
	payload, err := events.Encode(events.GrantRevoked{
		GrantID:   grant.ID,
		AccountID: grant.AccountID,
		ClientID:  grant.ClientID,
		RevokedAt: grant.RevokedAt,
		Reason:    reason,
	})
	if err != nil {
		return true, err
	}
	_, err = r.JS.Publish(ctx, events.Subject(events.SubjectGrantRevoked, grant.ID), payload,
		jetstream.WithMsgID("revoked-"+grant.ID))
	if err != nil {
		return true, fmt.Errorf("grants: announce revocation: %w", err)
	}
	return true, nil
}
