package issuer

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
)

// retiredKeyMargin keeps a retired key published a little longer than the
// longest-lived token it signed, for clock skew and cached key sets.
const retiredKeyMargin = 10 * time.Minute

// publishKeys stores the public keys of this issuer that may still verify a
// live token in the shared key set, by compare-and-set. Keys of other
// issuers in the set are kept; this issuer's retired keys are removed once
// every token they signed has expired.
func (is *Issuer) publishKeys(ctx context.Context) error {
	mine := make(map[string]bool)
	var current []events.JWK
	now := is.cfg.Now()
	for _, k := range is.keys.keys() {
		mine[k.id] = true
		if retired, ok := is.keys.retiredAt(k); ok && now.After(retired.Add(is.cfg.AccessTokenTTL+retiredKeyMargin)) {
			continue
		}
		jwk, err := publicJWK(k)
		if err != nil {
			return err
		}
		current = append(current, jwk)
	}

	count, err := is.updateKeySet(ctx, func(published []events.JWK) []events.JWK {
		var merged []events.JWK
		for _, k := range published {
			if !mine[k.KeyID] {
				merged = append(merged, k)
			}
		}
		return append(merged, current...)
	})
	if err != nil || count < 0 {
		return err
	}
	is.log.Info().Str("kid", is.keys.active().id).Int("keys", count).Msg("signing keys published")
	return nil
}

// updateKeySet stores change(published keys) as the shared key set by
// compare-and-set, reading again after a lost race. It returns the number
// of keys stored, or -1 when change left the key ids as they were and
// nothing was written.
func (is *Issuer) updateKeySet(ctx context.Context, change func(published []events.JWK) []events.JWK) (int, error) {
	for {
		set, rev, err := is.keySet.Get(ctx, events.KeySetKey)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return 0, err
		}

		keys := change(slices.Clone(set.Keys))
		if sameKeyIDs(set.Keys, keys) {
			return -1, nil
		}

		set.Keys = keys
		if rev == 0 {
			_, err = is.keySet.Create(ctx, events.KeySetKey, set)
		} else {
			_, err = is.keySet.Update(ctx, events.KeySetKey, set, rev)
		}
		if errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrExists) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return len(keys), nil
	}
}

func sameKeyIDs(a, b []events.JWK) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].KeyID != b[i].KeyID {
			return false
		}
	}
	return true
}

// rotateKey starts signing with a new key. The new public key is published
// before the key signs anything, so no token carries a kid that resource
// servers cannot find.
func (is *Issuer) rotateKey(ctx context.Context) (string, error) {
	ring := is.keys
	key, err := generateKey(ring.dir, ring.algorithm, is.cfg.Now())
	if err != nil {
		return "", err
	}
	jwk, err := publicJWK(key)
	if err != nil {
		return "", err
	}
	if err := is.addPublishedKey(ctx, jwk); err != nil {
		return "", err
	}

	ring.mu.Lock()
	ring.all = append(ring.all, key)
	ring.cur = key
	ring.mu.Unlock()

	is.log.Info().Str("kid", key.id).Msg("signing key rotated")
	return key.id, is.publishKeys(ctx)
}

// addPublishedKey adds one key to the shared key set.
func (is *Issuer) addPublishedKey(ctx context.Context, jwk events.JWK) error {
	_, err := is.updateKeySet(ctx, func(published []events.JWK) []events.JWK {
		return append(published, jwk)
	})
	return err
}

// maintainKeys rotates on the configured schedule and republishes the key
// set every few minutes so that retired keys leave it, until ctx ends.
func (is *Issuer) maintainKeys(ctx context.Context) {
	prune := time.NewTicker(5 * time.Minute)
	defer prune.Stop()
	var rotate <-chan time.Time
	if is.cfg.RotateEvery > 0 {
		ticker := time.NewTicker(is.cfg.RotateEvery)
		defer ticker.Stop()
		rotate = ticker.C
	}

	for {
		select {
		case <-ctx.Done():
			return
		case <-rotate:
			if _, err := is.rotateKey(ctx); err != nil {
				is.log.Error().Err(err).Msg("scheduled key rotation failed; the current key keeps signing")
			}
		case <-prune.C:
			if err := is.publishKeys(ctx); err != nil {
				is.log.Error().Err(err).Msg("republishing signing keys failed")
			}
		}
	}
}
