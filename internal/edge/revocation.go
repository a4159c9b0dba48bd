package edge

import (
	"errors"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// revoke handles token revocation (RFC 7009). Revoking a refresh token
// revokes its whole grant, so the device's refresh tokens stop working on
// every edge at once. Access tokens are self-contained JWTs that resource
// servers verify offline; they cannot be recalled and are answered with
// unsupported_token_type (RFC 7009 section 2.2.1).
func (e *Edge) revoke(w http.ResponseWriter, r *http.Request) error {
	form, client, err := e.parseClientRequest(w, r)
	if err != nil {
		return err
	}
	token := form.Get("token")
	if token == "" {
		return oauth.ErrInvalidRequest.WithDescription("token is missing.")
	}
	hint := form.Get("token_type_hint")
	if hint != "" && hint != "refresh_token" && hint != "access_token" {
		return oauth.ErrUnsupportedTokenType.WithDescription("token_type_hint %q is not supported.", hint)
	}

	if len(token) <= maxTokenBytes {
		rt, _, err := e.refresh.Get(r.Context(), e.hasher.RefreshTokenID(token))
		switch {
		case err == nil:
			if rt.ClientID != client.ID {
				return oauth.ErrUnauthorizedClient.WithDescription("The token was not issued to this client.")
			}
			revoked, err := e.revoker.Revoke(r.Context(), rt.AccountID, rt.GrantID, events.RevokeReasonClient)
			if err != nil {
				return oauth.ErrServerError.WithCause(err)
			}
			if revoked {
				zerolog.Ctx(r.Context()).Info().Str("client_id", client.ID).Str("grant_id", rt.GrantID).
					Str("account_id", rt.AccountID).Msg("grant revoked by the client")
			}
			w.WriteHeader(http.StatusOK)
			return nil
		case !errors.Is(err, kv.ErrNotFound):
			return oauth.ErrServerError.WithCause(err)
		}

		if strings.Count(token, ".") == 2 {
			if _, err := e.verifier.Verify(token); err == nil {
				return oauth.ErrUnsupportedTokenType.WithDescription("Access tokens expire on their own and cannot be revoked; revoke the refresh token to end the grant.")
			}
		}
	}

	// RFC 7009 section 2.2: an invalid or unknown token is not an error,
	// because the client's goal, that the token no longer works, holds.
	w.WriteHeader(http.StatusOK)
	return nil
}
