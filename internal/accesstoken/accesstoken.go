// Package accesstoken verifies the JWT access tokens the issuer signs
// (RFC 9068) against a published key set (RFC 7517). The edge uses it for
// introspection; a Go resource server can use it as it is.
//
// A key verifies only with the algorithm published with it, so a token
// cannot choose a weaker algorithm, "none", or an HMAC keyed with a public
// key.
package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamco/deviceauth/events"
)

// ErrInvalid is returned for any token that does not verify. The wrapped
// cause is the reason, for the log.
var ErrInvalid = errors.New("accesstoken: invalid token")

// maxTokenBytes rejects absurd input before any parsing.
const maxTokenBytes = 8192

// Claims are the claims of a verified access token.
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string
	ClientID  string
	Scope     string
	JTI       string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

type publicKey struct {
	algorithm string
	key       crypto.PublicKey
}

// Verifier checks access tokens. It is safe for concurrent use, and its key
// set can be replaced while it is used.
type Verifier struct {
	issuer string
	now    func() time.Time

	mu   sync.RWMutex
	keys map[string]publicKey
}

// NewVerifier returns a verifier that accepts tokens from issuer. A nil now
// means time.Now.
func NewVerifier(issuer string, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	return &Verifier{issuer: issuer, now: now, keys: map[string]publicKey{}}
}

// SetKeys replaces the keys tokens are verified with. Keys of an unknown type
// or algorithm are skipped and reported in the returned error; the others
// are still used.
func (v *Verifier) SetKeys(set events.KeySet) error {
	keys := make(map[string]publicKey, len(set.Keys))
	var errs []error
	for _, jwk := range set.Keys {
		key, err := parseJWK(jwk)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %q: %w", jwk.KeyID, err))
			continue
		}
		keys[jwk.KeyID] = key
	}
	v.mu.Lock()
	v.keys = keys
	v.mu.Unlock()
	return errors.Join(errs...)
}

// Verify checks the signature, type, issuer and lifetime of token and returns
// its claims. Every failure wraps ErrInvalid.
func (v *Verifier) Verify(token string) (Claims, error) {
	if len(token) > maxTokenBytes || strings.Count(token, ".") != 2 {
		return Claims{}, fmt.Errorf("%w: not a compact JWS", ErrInvalid)
	}

	claims := jwt.MapClaims{}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256", "ES256"}),
		jwt.WithIssuer(v.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
	)
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		// RFC 9068 section 4: reject anything not typed as an access token.
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
			return nil, errors.New("typ is not at+jwt")
		}
		kid, _ := t.Header["kid"].(string)
		v.mu.RLock()
		key, ok := v.keys[kid]
		v.mu.RUnlock()
		if !ok {
			return nil, fmt.Errorf("no published key with kid %q", kid)
		}
		if t.Method.Alg() != key.algorithm {
			return nil, fmt.Errorf("algorithm %s does not match the key's %s", t.Method.Alg(), key.algorithm)
		}
		return key.key, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}

	out := Claims{
		Issuer:   stringClaim(claims, "iss"),
		Subject:  stringClaim(claims, "sub"),
		ClientID: stringClaim(claims, "client_id"),
		Scope:    stringClaim(claims, "scope"),
		JTI:      stringClaim(claims, "jti"),
	}
	if aud, err := claims.GetAudience(); err == nil {
		out.Audience = aud
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		out.ExpiresAt = exp.Time
	}
	if iat, err := claims.GetIssuedAt(); err == nil && iat != nil {
		out.IssuedAt = iat.Time
	}
	if out.Subject == "" || out.ClientID == "" || out.JTI == "" {
		return Claims{}, fmt.Errorf("%w: sub, client_id or jti is missing", ErrInvalid)
	}
	return out, nil
}

func stringClaim(claims jwt.MapClaims, name string) string {
	s, _ := claims[name].(string)
	return s
}

func parseJWK(jwk events.JWK) (publicKey, error) {
	decode := base64.RawURLEncoding.DecodeString
	switch {
	case jwk.KeyType == "RSA" && jwk.Algorithm == "RS256":
		n, err1 := decode(jwk.N)
		e, err2 := decode(jwk.E)
		if err1 != nil || err2 != nil || len(e) > 4 {
			return publicKey{}, errors.New("malformed RSA key")
		}
		key := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if key.N.BitLen() < 2048 {
			return publicKey{}, errors.New("RSA key shorter than 2048 bits")
		}
		return publicKey{algorithm: "RS256", key: key}, nil

	case jwk.KeyType == "EC" && jwk.Algorithm == "ES256" && jwk.Curve == "P-256":
		x, err1 := decode(jwk.X)
		y, err2 := decode(jwk.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return publicKey{}, errors.New("malformed EC key")
		}
		point := append(append([]byte{4}, x...), y...)
		key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return publicKey{}, fmt.Errorf("EC point: %w", err)
		}
		return publicKey{algorithm: "ES256", key: key}, nil

	default:
		return publicKey{}, fmt.Errorf("unsupported key type %q with algorithm %q", jwk.KeyType, jwk.Algorithm)
	}
}
