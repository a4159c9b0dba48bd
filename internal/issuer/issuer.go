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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/grants"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/ops"
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

	// BeforeStore and AfterStore, when set, are called with the code id
	// after the tokens are minted but before the code record is stored as
	// issued, and after the record and the grant are stored but before the
	// event is acknowledged. Fault tests use them to stop an issuer at those
	// points; production leaves them nil.
	BeforeStore func(codeID string)
	AfterStore  func(codeID string)
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

	nc       *nats.Conn
	keys     *keyRing
	registry *prometheus.Registry
	metrics  issuerMetrics

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

	registry := prometheus.NewRegistry()
	cfg.Worker.Metrics = worker.NewMetrics(registry)
	cfg.Worker.Durable = events.ConsumerIssuer
	cfg.Worker.FilterSubject = events.Subject(events.SubjectGrantApproved, "*")
	return &Issuer{
		nc:       nc,
		registry: registry,
		metrics:  newIssuerMetrics(registry),
		cfg:      cfg,
		js:       js,
		hasher:   hasher,
		log:      log.With().Str("service", "issuer").Logger(),
		keys:     keys,
	}, nil
}

// Metrics returns the issuer's own registry.
func (is *Issuer) Metrics() *prometheus.Registry { return is.registry }

// Ready reports whether NATS and every bucket the issuer writes are
// reachable.
func (is *Issuer) Ready(ctx context.Context) error {
	return ops.NATSReady(is.nc, is.js, events.BucketCodes, events.BucketGrants,
		events.BucketRefreshTokens, events.BucketKeys)(ctx)
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
	is.codes = kv.NewLeaderRead[events.CodeRecord](buckets[events.BucketCodes], is.nc)
	is.grants = kv.New[events.Grant](buckets[events.BucketGrants])
	is.refresh = kv.New[events.RefreshToken](buckets[events.BucketRefreshTokens])
	is.keySet = kv.New[events.KeySet](buckets[events.BucketKeys])
	is.revoker = &grants.Revoker{Grants: is.grants, Refresh: is.refresh, JS: is.js, Now: is.cfg.Now}

	// A cluster that is still forming cannot respond yet, so keep trying.
	if err := natsinfra.Retry(ctx, is.publishKeys); err != nil {
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
		return is.issue(ctx, log.With().Str("code_id", codes.LogID(ev.CodeID)).Logger(), ev.CodeID)
	})
}

// issue mints the tokens for an approved code. Minting happens before the
// compare-and-set that moves the code to issued. When another issuer wins
// that race, what this one minted is discarded and never leaves, so exactly
// one token response exists per code.
//
// The grant and the refresh token record are written only after that
// compare-and-set, from the ids stored in the code record, so a losing or
// crashed issuer never leaves a grant that names tokens nobody holds. A
// redelivery finds the code issued and writes whichever of the two is
// missing.
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
			return is.storeGrant(ctx, codeID, rec)
		default:
			log.Warn().Str("state", string(rec.State)).Msg("grant event for a code that is not approved")
			return nil
		}

		now := is.cfg.Now()
		// One grant per code, so every attempt for a code names the same
		// grant.
		grantID := "grant_" + codeID[:32]
		code, err := is.mintForCode(grantID, rec, now)
		if err != nil {
			return err
		}
		plaintext, err := json.Marshal(code.response)
		if err != nil {
			return fmt.Errorf("issuer: encode token response: %w", err)
		}
		sealed, err := codes.Seal(rec.SealKey, plaintext)
		if err != nil {
			return err
		}

		rec.State = events.StateIssued
		rec.GrantID = grantID
		rec.AccessTokenID = code.jti
		rec.RefreshTokenID = code.refreshID
		rec.SealedToken = sealed
		rec.IssuedAt = now
		if is.cfg.BeforeStore != nil {
			is.cfg.BeforeStore(codeID)
		}
		_, err = is.codes.Update(ctx, codeID, rec, rev)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}

		is.metrics.issued.Inc()
		if !rec.DecidedAt.IsZero() {
			is.metrics.approvalToIssue.Observe(now.Sub(rec.DecidedAt).Seconds())
		}
		log.Info().Str("client_id", rec.ClientID).Str("account_id", rec.AccountID).
			Str("grant_id", grantID).Str("jti", code.jti).
			Dur("since_approval_ms", now.Sub(rec.DecidedAt)).Msg("token issued")

		if err := is.storeGrant(ctx, codeID, rec); err != nil {
			return err
		}
		if is.cfg.AfterStore != nil {
			is.cfg.AfterStore(codeID)
		}
		return nil
	}
}

// storeGrant writes the grant and its refresh token record for an issued
// code, from the token ids the code record stores. It writes nothing when
// the grant exists, so a redelivery never brings back a refresh token that a
// revocation deleted.
func (is *Issuer) storeGrant(ctx context.Context, codeID string, rec events.CodeRecord) error {
	if rec.GrantID == "" {
		return nil
	}
	key := events.GrantKey(rec.AccountID, rec.GrantID)
	if _, _, err := is.grants.Get(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, kv.ErrNotFound) {
		return err
	}

	if rec.RefreshTokenID != "" {
		_, err := is.refresh.Create(ctx, rec.RefreshTokenID, events.RefreshToken{
			GrantID:   rec.GrantID,
			ClientID:  rec.ClientID,
			AccountID: rec.AccountID,
			Scopes:    rec.Scopes,
			IssuedAt:  rec.IssuedAt,
			ExpiresAt: rec.IssuedAt.Add(is.cfg.RefreshTokenTTL),
		})
		if err != nil && !errors.Is(err, kv.ErrExists) {
			return err
		}
	}

	_, err := is.grants.Create(ctx, key, grants.FromCode(codeID, rec))
	if errors.Is(err, kv.ErrExists) {
		return is.dropRevokedRefresh(ctx, key, rec.RefreshTokenID)
	}
	return err
}

// dropRevokedRefresh deletes the refresh token record just created for a
// grant that an edge created first, already revoked, because the device code
// was replayed before this issuer got to write the grant.
func (is *Issuer) dropRevokedRefresh(ctx context.Context, key, refreshID string) error {
	grant, _, err := is.grants.Get(ctx, key)
	if err != nil {
		return err
	}
	if grant.RevokedAt.IsZero() || refreshID == "" {
		return nil
	}
	return is.refresh.Delete(ctx, refreshID)
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
