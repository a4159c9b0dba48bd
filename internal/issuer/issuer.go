// Package issuer mints tokens for approved device codes. It consumes grant
// events, signs an RFC 9068 JWT access token and a refresh token, and stores
// the token response sealed to the device code, so that any edge can hand it
// out and nothing else can read it. It alone holds signing keys, and it
// publishes their public halves for the edges to serve as a JWKS.
package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/grants"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/worker"
)

// ScopeOfflineAccess is the scope that requests a refresh token.
const ScopeOfflineAccess = "offline_access"

// Config configures the issuer.
type Config struct {
	Storage natsinfra.Settings
	Worker  worker.Config

	// Issuer is the "iss" claim: the edge's public base URL.
	Issuer string
	// Audience is the "aud" claim: the resource server the tokens are for.
	Audience string
	// KeyDir holds the PEM private keys. A key is generated there if none
	// exists for Algorithm.
	KeyDir string
	// Algorithm is RS256 (the default) or ES256.
	Algorithm string
	// HashKey keys the hashes of refresh tokens. Edges use the same key.
	HashKey []byte

	// RotateEvery starts a new signing key at this period. Zero rotates only
	// on request (SubjectRotateKeys).
	RotateEvery time.Duration

	// AccessTokenTTL defaults to one hour, RefreshTokenTTL to 30 days.
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration

	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Validate reports every problem with cfg at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("issuer URL is missing"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("audience is missing"))
	}
	if c.KeyDir == "" {
		errs = append(errs, errors.New("key directory is missing"))
	}
	if c.Algorithm != AlgorithmRS256 && c.Algorithm != AlgorithmES256 {
		errs = append(errs, fmt.Errorf("signing algorithm %q is not supported (want %s or %s)", c.Algorithm, AlgorithmRS256, AlgorithmES256))
	}
	if c.RefreshTokenTTL > natsinfra.MaxRefreshTokenTTL {
		errs = append(errs, fmt.Errorf("refresh token lifetime %s is over the maximum %s", c.RefreshTokenTTL, natsinfra.MaxRefreshTokenTTL))
	}
	if len(c.HashKey) < codes.MinKeyBytes {
		errs = append(errs, fmt.Errorf("hash key has %d bytes, want at least %d", len(c.HashKey), codes.MinKeyBytes))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Algorithm == "" {
		c.Algorithm = AlgorithmRS256
	}
	if c.AccessTokenTTL == 0 {
		c.AccessTokenTTL = time.Hour
	}
	if c.RefreshTokenTTL == 0 {
		c.RefreshTokenTTL = 30 * 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Issuer mints tokens.
type Issuer struct {
	cfg    Config
	js     jetstream.JetStream
	hasher *codes.Hasher
	log    zerolog.Logger

	nc   *nats.Conn
	keys *keyRing

	codes   *kv.Bucket[events.CodeRecord]
	grants  *kv.Bucket[events.Grant]
	refresh *kv.Bucket[events.RefreshToken]
	keySet  *kv.Bucket[events.KeySet]
	revoker *grants.Revoker
}

// New returns an issuer that uses nc.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Issuer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("issuer: invalid configuration: %w", err)
	}
	hasher, err := codes.NewHasher(cfg.HashKey)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}

	keys, err := loadKeyRing(cfg.KeyDir, cfg.Algorithm, cfg.Now())
	if err != nil {
		return nil, err
	}

	cfg.Worker.Durable = events.ConsumerIssuer
	cfg.Worker.FilterSubject = events.Subject(events.SubjectGrantApproved, "*")
	return &Issuer{
		cfg:    cfg,
		js:     js,
		hasher: hasher,
		log:    log.With().Str("service", "issuer").Logger(),
		nc:     nc,
		keys:   keys,
	}, nil
}

// Run creates what the issuer needs, publishes its keys and consumes until
// ctx ends.
func (is *Issuer) Run(ctx context.Context) error {
	if _, err := natsinfra.EnsureStream(ctx, is.js, is.cfg.Storage); err != nil {
		return err
	}
	buckets, err := natsinfra.EnsureBuckets(ctx, is.js, is.cfg.Storage,
		events.BucketCodes, events.BucketGrants, events.BucketRefreshTokens, events.BucketKeys)
	if err != nil {
		return err
	}
	is.codes = kv.New[events.CodeRecord](buckets[events.BucketCodes])
	is.grants = kv.New[events.Grant](buckets[events.BucketGrants])
	is.refresh = kv.New[events.RefreshToken](buckets[events.BucketRefreshTokens])
	is.keySet = kv.New[events.KeySet](buckets[events.BucketKeys])
	is.revoker = &grants.Revoker{Grants: is.grants, Refresh: is.refresh, JS: is.js, Now: is.cfg.Now}

	if err := is.publishKeys(ctx); err != nil {
		return err
	}
	stopServing, err := is.serveRequests(ctx)
	if err != nil {
		return err
	}
	defer stopServing()
	go is.maintainKeys(ctx)

	return worker.Run(ctx, is.js, is.cfg.Worker, is.log, func(ctx context.Context, log zerolog.Logger, msg jetstream.Msg) error {
		var ev events.GrantApproved
		if err := events.Decode(msg.Data(), &ev); err != nil {
			return fmt.Errorf("%w: %w", worker.ErrPermanent, err)
		}
		return is.issue(ctx, log.With().Str("code_id", shortID(ev.CodeID)).Logger(), ev.CodeID)
	})
}

// issue mints the tokens for an approved code. Minting happens before the
// compare-and-set that moves the code to issued. When another issuer wins
// that race, what this one minted is discarded and never leaves, so exactly
// one token response exists per code.
func (is *Issuer) issue(ctx context.Context, log zerolog.Logger, codeID string) error {
	for {
		rec, rev, err := is.codes.Get(ctx, codeID)
		if errors.Is(err, kv.ErrNotFound) {
			log.Warn().Msg("approved code no longer exists; nothing to issue")
			return nil
		}
		if err != nil {
			return err
		}

		switch rec.State {
		case events.StateApproved:
		case events.StateIssued, events.StateRedeemed:
			// A crash between the compare-and-set below and the grant
			// write leaves the grant missing; the redelivery repairs it.
			return is.storeGrant(ctx, grantFromRecord(codeID, rec))
		default:
			log.Warn().Str("state", string(rec.State)).Msg("grant event for a code that is not approved")
			return nil
		}

		now := is.cfg.Now()
		rec.IssuedAt = now
		grant := grantFromRecord(codeID, rec)
		response, refreshID, err := is.mint(ctx, &grant, grant.Scopes, now)
		if err != nil {
			return err
		}

		plaintext, err := json.Marshal(response)
		if err != nil {
			return fmt.Errorf("issuer: encode token response: %w", err)
		}
		sealed, err := codes.Seal(rec.SealKey, plaintext)
		if err != nil {
			return err
		}

		rec.State = events.StateIssued
		rec.GrantID = grant.ID
		rec.SealedToken = sealed
		rec.AccessTokenID = grant.AccessTokenID
		rec.RefreshTokenID = grant.RefreshTokenID
		_, err = is.codes.Update(ctx, codeID, rec, rev)
		if errors.Is(err, kv.ErrConflict) {
			is.discardRefresh(ctx, log, refreshID)
			continue
		}
		if err != nil {
			is.discardRefresh(ctx, log, refreshID)
			return err
		}

		// Only the issuer that won the compare-and-set writes the grant, so
		// the grant always names the tokens the device receives.
		if err := is.storeGrant(ctx, grant); err != nil {
			return err
		}
		log.Info().Str("client_id", rec.ClientID).Str("account_id", rec.AccountID).
			Str("grant_id", grant.ID).Str("jti", grant.AccessTokenID).
			Dur("since_approval_ms", now.Sub(rec.DecidedAt)).Msg("token issued")
		return nil
	}
}

// grantFromRecord returns the grant of a code that is issued or about to be. There is one grant per code, under an id derived from the code
// id, so a redelivery finds the grant it already wrote.
func grantFromRecord(codeID string, rec events.CodeRecord) events.Grant {
	return events.Grant{
		ID:             "grant_" + codeID[:32],
		CodeID:         codeID,
		ClientID:       rec.ClientID,
		AccountID:      rec.AccountID,
		Username:       rec.Username,
		Scopes:         rec.Scopes,
		CreatedAt:      rec.IssuedAt,
		DeviceKind:     rec.DeviceKind,
		AccessTokenID:  rec.AccessTokenID,
		RefreshTokenID: rec.RefreshTokenID,
	}
}

// storeGrant creates the grant unless it exists. An existing grant may have
// been refreshed or revoked since, so it is never overwritten.
func (is *Issuer) storeGrant(ctx context.Context, grant events.Grant) error {
	_, err := is.grants.Create(ctx, events.GrantKey(grant.AccountID, grant.ID), grant)
	if errors.Is(err, kv.ErrExists) {
		return nil
	}
	return err
}

// discardRefresh deletes a refresh token that will never be handed out.
func (is *Issuer) discardRefresh(ctx context.Context, log zerolog.Logger, refreshID string) {
	if refreshID == "" {
		return
	}
	if err := is.refresh.Delete(ctx, refreshID); err != nil {
		log.Warn().Err(err).Msg("deleting an unused refresh token failed")
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
