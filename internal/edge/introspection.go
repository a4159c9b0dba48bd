package edge

import (
	"errors"
	"net/http"
	"strings"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// introspectionResponse is the response of RFC 7662 section 2.2. Every
// member but Active is omitted for an inactive token.
type introspectionResponse struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	Expires   int64  `json:"exp,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	Subject   string `json:"sub,omitempty"`
	Audience  any    `json:"aud,omitempty"`
	Issuer    string `json:"iss,omitempty"`
	JTI       string `json:"jti,omitempty"`
}

// introspect handles token introspection (RFC 7662). Only confidential
// clients, such as resource servers, may introspect, because the response
// tells who a token belongs to (RFC 7662 section 2.1).
func (e *Edge) introspect(w http.ResponseWriter, r *http.Request) error {
	form, client, err := e.parseClientRequest(w, r)
	if err != nil {
		return err
	}
	if client.Public {
		return oauth.ErrInvalidClient.WithDescription("Introspection requires a confidential client.")
	}
	token := form.Get("token")
	if token == "" {
		return oauth.ErrInvalidRequest.WithDescription("token is missing.")
	}

	inactive := introspectionResponse{Active: false}
	if len(token) > maxTokenBytes {
		oauth.WriteJSON(w, http.StatusOK, inactive)
		return nil
	}

	if strings.Count(token, ".") == 2 {
		claims, err := e.verifier.Verify(token)
		if err != nil {
			oauth.WriteJSON(w, http.StatusOK, inactive)
			return nil
		}
		oauth.WriteJSON(w, http.StatusOK, introspectionResponse{
			Active:    true,
			Scope:     claims.Scope,
			ClientID:  claims.ClientID,
			TokenType: "Bearer",
			Expires:   claims.ExpiresAt.Unix(),
			IssuedAt:  claims.IssuedAt.Unix(),
			Subject:   claims.Subject,
			Audience:  claims.Audience,
			Issuer:    claims.Issuer,
			JTI:       claims.JTI,
		})
		return nil
	}

	rt, _, err := e.refresh.Get(r.Context(), e.hasher.RefreshTokenID(token))
	if errors.Is(err, kv.ErrNotFound) {
		oauth.WriteJSON(w, http.StatusOK, inactive)
		return nil
	}
	if err != nil {
		return oauth.ErrServerError.WithCause(err)
	}
	active, err := e.refreshTokenActive(r, rt)
	if err != nil {
		return oauth.ErrServerError.WithCause(err)
	}
	if !active {
		oauth.WriteJSON(w, http.StatusOK, inactive)
		return nil
	}
	oauth.WriteJSON(w, http.StatusOK, introspectionResponse{
		Active:    true,
		Scope:     strings.Join(rt.Scopes, " "),
		ClientID:  rt.ClientID,
		TokenType: "refresh_token",
		Expires:   rt.ExpiresAt.Unix(),
		IssuedAt:  rt.IssuedAt.Unix(),
		Subject:   rt.AccountID,
		Issuer:    e.issuer,
	})
	return nil
}

// refreshTokenActive reports whether a refresh token would still be
// accepted: not rotated, not expired, and its grant not revoked.
func (e *Edge) refreshTokenActive(r *http.Request, rt events.RefreshToken) (bool, error) {
	if !rt.RotatedAt.IsZero() || !e.cfg.Now().Before(rt.ExpiresAt) {
		return false, nil
	}
	grant, _, err := e.revoker.Grants.Get(r.Context(), events.GrantKey(rt.AccountID, rt.GrantID))
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return grant.RevokedAt.IsZero(), nil
}
