package issuer

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/oauth"
)

// mint signs an access token for grant with scopes and, when the scopes
// include offline_access, stores a new refresh token. It records the token
// ids in grant and returns the token response and the storage id of the
// refresh token (empty when none was made).
func (is *Issuer) mint(ctx context.Context, grant *events.Grant, scopes []string, now time.Time) (oauth.TokenResponse, string, error) {
	signed, jti, err := is.signAccessToken(grant, scopes, now)
	if err != nil {
		return oauth.TokenResponse{}, "", err
	}
	grant.AccessTokenID = jti

	response := oauth.TokenResponse{
		AccessToken: signed,
		TokenType:   "Bearer",
		ExpiresIn:   int(is.cfg.AccessTokenTTL / time.Second),
		Scope:       strings.Join(scopes, " "),
	}
	if !slices.Contains(grant.Scopes, ScopeOfflineAccess) {
		return response, "", nil
	}

	refreshToken, refreshID, err := is.newRefreshToken()
	if err != nil {
		return oauth.TokenResponse{}, "", err
	}
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

// signAccessToken returns a JWT access token in the RFC 9068 profile and its
// jti.
func (is *Issuer) signAccessToken(grant *events.Grant, scopes []string, now time.Time) (string, string, error) {
	key := is.keys.active()
	jti := rand.Text()
	claims := jwt.MapClaims{
		"iss":       is.cfg.Issuer,
		"sub":       grant.AccountID,
		"aud":       is.cfg.Audience,
		"exp":       now.Add(is.cfg.AccessTokenTTL).Unix(),
		"iat":       now.Unix(),
		"jti":       jti,
		"client_id": grant.ClientID,
		"scope":     strings.Join(scopes, " "),
	}
	if grant.Username != "" {
		// The claim of OpenID Connect Core section 5.1, which RFC 9068
		// section 2.2.3.1 allows in access tokens. It lets a device show who
		// it is signed in as; resource servers key on sub.
		claims["preferred_username"] = grant.Username
	}
	token := jwt.NewWithClaims(key.method(), claims)
	// RFC 9068 section 2.1: the "at+jwt" type keeps an access token from
	// being accepted where another kind of JWT is expected.
	token.Header["typ"] = "at+jwt"
	token.Header["kid"] = key.id
	signed, err := token.SignedString(key.private)
	if err != nil {
		return "", "", fmt.Errorf("issuer: sign access token: %w", err)
	}
	return signed, jti, nil
}

// mintedCode is what mintForCode makes: the response for the device and the
// ids under which its tokens are recorded.
type mintedCode struct {
	response  oauth.TokenResponse
	jti       string
	refreshID string
}

// mintForCode signs the access token and makes the refresh token for the
// approved code in rec. It stores nothing: the caller records the ids only
// if it wins the compare-and-set on the code, and then writes the grant and
// the refresh token record from them.
func (is *Issuer) mintForCode(grantID string, rec events.CodeRecord, now time.Time) (mintedCode, error) {
	grant := events.Grant{ID: grantID, ClientID: rec.ClientID, AccountID: rec.AccountID, Username: rec.Username}
	signed, jti, err := is.signAccessToken(&grant, rec.Scopes, now)
	if err != nil {
		return mintedCode{}, err
	}

	out := mintedCode{
		jti: jti,
		response: oauth.TokenResponse{
			AccessToken: signed,
			TokenType:   "Bearer",
			ExpiresIn:   int(is.cfg.AccessTokenTTL / time.Second),
			Scope:       strings.Join(rec.Scopes, " "),
		},
	}
	if !slices.Contains(rec.Scopes, ScopeOfflineAccess) {
		return out, nil
	}

	out.response.RefreshToken, out.refreshID, err = is.newRefreshToken()
	if err != nil {
		return mintedCode{}, err
	}
	return out, nil
}

// newRefreshToken returns a random refresh token and the keyed hash it is
// stored under.
func (is *Issuer) newRefreshToken() (token, id string, err error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", fmt.Errorf("issuer: generate refresh token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(raw)
	return token, is.hasher.RefreshTokenID(token), nil
}
