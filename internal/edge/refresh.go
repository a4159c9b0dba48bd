package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/oauth"
)

// issuerTimeout bounds a request to the issuers.
const issuerTimeout = 10 * time.Second

// maxTokenBytes bounds a token presented to the edge; ours are far shorter.
const maxTokenBytes = 4096

// refreshToken handles the refresh token grant (RFC 6749 section 6). Only an
// issuer can sign, so the edge forwards the request, identified by the
// keyed hash of the token, to one of them and relays the reply.
func (e *Edge) refreshToken(w http.ResponseWriter, r *http.Request, form url.Values, client events.Client) error {
	token := form.Get("refresh_token")
	if token == "" {
		return oauth.ErrInvalidRequest.WithDescription("refresh_token is missing.")
	}
	if len(token) > maxTokenBytes {
		return oauth.ErrInvalidGrant.WithDescription("The refresh token is invalid, expired or revoked.")
	}
	scopes, err := parseScope(form.Get("scope"))
	if err != nil {
		return err
	}

	request, err := events.Encode(events.RefreshRequest{
		RefreshTokenID: e.hasher.RefreshTokenID(token),
		ClientID:       client.ID,
		Scopes:         scopes,
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(r.Context(), issuerTimeout)
	defer cancel()
	msg, err := e.nc.RequestWithContext(ctx, events.SubjectRefresh, request)
	if errors.Is(err, nats.ErrNoResponders) {
		return oauth.ErrServerError.WithDescription("No token issuer is available. Try again later.").
			WithStatus(http.StatusServiceUnavailable).WithCause(err)
	}
	if err != nil {
		return oauth.ErrServerError.WithCause(fmt.Errorf("refresh request to the issuers: %w", err))
	}

	var reply events.RefreshReply
	if err := events.Decode(msg.Data, &reply); err != nil {
		return oauth.ErrServerError.WithCause(err)
	}
	if reply.Error != "" {
		return oauth.ErrorFromCode(reply.Error, reply.ErrorDescription)
	}
	oauth.WriteTokenResponse(w, reply.TokenResponse)
	return nil
}
