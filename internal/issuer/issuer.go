// Package issuer mints tokens for approved device codes. It consumes grant
// events, signs an RFC 9068 JWT access token and a refresh token, and stores
// the token response sealed to the device code, so that any edge can hand it
// out and nothing else can read it. It alone holds signing keys, and it
// publishes their public halves for the edges to serve as a JWKS.
package issuer

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/oauth"
	"github.com/streamco/deviceauth/internal/worker"
)

// ScopeOfflineAccess is the scope that asks for a refresh token.
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

	key     signingKey
	allKeys []signingKey

	codes   *kv.Bucket[events.CodeRecord]
	grants  *kv.Bucket[events.Grant]
	refresh *kv.Bucket[events.RefreshToken]
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

	active, all, err := loadKeys(cfg.KeyDir, cfg.Algorithm, cfg.Now())
	if err != nil {
		return nil, err
	}

	cfg.Worker.Durable = events.ConsumerIssuer
	cfg.Worker.FilterSubject = events.Subject(events.SubjectGrantApproved, "*")
	return &Issuer{
		cfg:     cfg,
		js:      js,
		hasher:  hasher,
		log:     log.With().Str("service", "issuer").Logger(),
		key:     active,
		allKeys: all,
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

	if err := is.publishKeys(ctx, kv.New[events.KeySet](buckets[events.BucketKeys])); err != nil {
		return err
	}

	return worker.Run(ctx, is.js, is.cfg.Worker, is.log, func(ctx context.Context, log zerolog.Logger, msg jetstream.Msg) error {
		var ev events.GrantApproved
		if err := events.Decode(msg.Data(), &ev); err != nil {
			return fmt.Errorf("%w: %w", worker.ErrPermanent, err)
		}
		return is.issue(ctx, log.With().Str("code_id", shortID(ev.CodeID)).Logger(), ev.CodeID)
	})
}

// publishKeys merges this issuer's public keys into the published key set,
// keeping keys other issuers published, by compare-and-set.
func (is *Issuer) publishKeys(ctx context.Context, bucket *kv.Bucket[events.KeySet]) error {
	var mine []events.JWK
	for _, k := range is.allKeys {
		jwk, err := publicJWK(k)
		if err != nil {
			return err
		}
		mine = append(mine, jwk)
	}

	for {
		set, rev, err := bucket.Get(ctx, events.KeySetKey)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}

		merged := set.Keys
		changed := false
		for _, jwk := range mine {
			if !slices.ContainsFunc(merged, func(k events.JWK) bool { return k.KeyID == jwk.KeyID }) {
				merged = append(merged, jwk)
				changed = true
			}
		}
		if !changed {
			return nil
		}

		set.Keys = merged
		if rev == 0 {
			_, err = bucket.Create(ctx, events.KeySetKey, set)
		} else {
			_, err = bucket.Update(ctx, events.KeySetKey, set, rev)
		}
		if errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrExists) {
			continue
		}
		if err != nil {
			return err
		}
		is.log.Info().Str("kid", is.key.id).Int("keys", len(merged)).Msg("signing keys published")
		return nil
	}
}

// issue mints the tokens for an approved code. Minting happens before the
// compare-and-set that moves the code to issued; when another issuer wins
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
			return nil
		default:
			log.Warn().Str("state", string(rec.State)).Msg("grant event for a code that is not approved")
			return nil
		}

		now := is.cfg.Now()
		grant := events.Grant{
			// One grant per code, so a redelivery overwrites rather than
			// adds.
			ID:         "grant_" + codeID[:32],
			CodeID:     codeID,
			ClientID:   rec.ClientID,
			AccountID:  rec.AccountID,
			Scopes:     rec.Scopes,
			CreatedAt:  now,
			DeviceKind: rec.DeviceKind,
		}

		response, refreshID, err := is.mint(ctx, &grant, rec.Username, now)
		if err != nil {
			return err
		}
		if _, err := is.grants.Put(ctx, events.GrantKey(grant.AccountID, grant.ID), grant); err != nil {
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
		rec.IssuedAt = now
		_, err = is.codes.Update(ctx, codeID, rec, rev)
		if errors.Is(err, kv.ErrConflict) {
			is.discardRefresh(ctx, log, refreshID)
			continue
		}
		if err != nil {
			is.discardRefresh(ctx, log, refreshID)
			return err
		}

		log.Info().Str("client_id", rec.ClientID).Str("account_id", rec.AccountID).
			Str("grant_id", grant.ID).Str("jti", grant.AccessTokenID).
			Dur("since_approval", now.Sub(rec.DecidedAt)).Msg("token issued")
		return nil
	}
}

// mint signs the access token and creates the refresh token for grant, and
// records their ids in it. It returns the storage id of the refresh token,
// empty when none was made. A non-empty username becomes the
// "preferred_username" claim, so a device can show who it is signed in as.
func (is *Issuer) mint(ctx context.Context, grant *events.Grant, username string, now time.Time) (oauth.TokenResponse, string, error) {
	jti := rand.Text()
	claims := jwt.MapClaims{
		"iss":       is.cfg.Issuer,
		"sub":       grant.AccountID,
		"aud":       is.cfg.Audience,
		"exp":       now.Add(is.cfg.AccessTokenTTL).Unix(),
		"iat":       now.Unix(),
		"jti":       jti,
		"client_id": grant.ClientID,
		"scope":     strings.Join(grant.Scopes, " "),
	}
	if username != "" {
		// The claim of OpenID Connect Core section 5.1, which RFC 9068
		// section 2.2.3.1 allows in access tokens.
		claims["preferred_username"] = username
	}
	token := jwt.NewWithClaims(is.key.method(), claims)
	// RFC 9068 section 2.1: the "at+jwt" type keeps an access token from
	// being accepted where another kind of JWT is expected.
	token.Header["typ"] = "at+jwt"
	token.Header["kid"] = is.key.id
	signed, err := token.SignedString(is.key.private)
	if err != nil {
		return oauth.TokenResponse{}, "", fmt.Errorf("issuer: sign access token: %w", err)
	}
	grant.AccessTokenID = jti

	response := oauth.TokenResponse{
		AccessToken: signed,
		TokenType:   "Bearer",
		ExpiresIn:   int(is.cfg.AccessTokenTTL / time.Second),
		Scope:       strings.Join(grant.Scopes, " "),
	}
	if !slices.Contains(grant.Scopes, ScopeOfflineAccess) {
		return response, "", nil
	}

	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return oauth.TokenResponse{}, "", fmt.Errorf("issuer: generate refresh token: %w", err)
	}
	refreshToken := base64.RawURLEncoding.EncodeToString(raw)
	refreshID := is.hasher.RefreshTokenID(refreshToken)
	_, err = is.refresh.Put(ctx, refreshID, events.RefreshToken{
		GrantID:   grant.ID,
		ClientID:  grant.ClientID,
		AccountID: grant.AccountID,
		Scopes:    grant.Scopes,
		IssuedAt:  now,
		ExpiresAt: now.Add(is.cfg.RefreshTokenTTL),
	})
	if err != nil {
		return oauth.TokenResponse{}, "", err
	}
	grant.RefreshTokenID = refreshID
	response.RefreshToken = refreshToken
	return response, refreshID, nil
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
