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

// Reasons for a revocation, as recorded in events.GrantRevoked.
const (
	ReasonUser   = "user"
	ReasonClient = "client"
	ReasonReuse  = "reuse"
)

// Revoker revokes grants.
type Revoker struct {
	Grants  *kv.Bucket[events.Grant]
	Refresh *kv.Bucket[events.RefreshToken]
	JS      jetstream.JetStream
	Now     func() time.Time
}

// Revoke marks the grant revoked by compare-and-set, deletes its current
// refresh token and publishes events.GrantRevoked. It returns false when
// there is no such grant. A grant already marked revoked goes through the
// last two steps again, so a revocation cut short by a crash completes on a
// retry, and the message id keeps the event from being stored twice.
func (r *Revoker) Revoke(ctx context.Context, accountID, grantID, reason string) (bool, error) {
	key := events.GrantKey(accountID, grantID)
	var grant events.Grant
	for {
		var rev uint64
		var err error
		grant, rev, err = r.Grants.Get(ctx, key)
		if errors.Is(err, kv.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if !grant.RevokedAt.IsZero() {
			break
		}

		grant.RevokedAt = r.Now()
		_, err = r.Grants.Update(ctx, key, grant, rev)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
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
