package edge

import (
	"net/http"
	"net/url"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/clients"
	"github.com/streamco/deviceauth/internal/oauth"
)

// parseClientRequest reads an OAuth request body and authenticates the
// client that sent it, the first step of every endpoint but the token
// endpoint, which checks grant_type before the client.
func (e *Edge) parseClientRequest(w http.ResponseWriter, r *http.Request) (url.Values, events.Client, error) {
	form, err := parseForm(w, r)
	if err != nil {
		return nil, events.Client{}, err
	}
	client, err := e.authenticateClient(r, form)
	if err != nil {
		return nil, events.Client{}, err
	}
	return form, client, nil
}

// authenticateClient identifies the client of an OAuth request and, for a
// confidential client, checks its secret (RFC 6749 section 2.3.1).
//
// A public client identifies itself with client_id in the body. A public
// client that also sends an Authorization header is rejected with
// invalid_client: golang.org/x/oauth2, by default, first tries HTTP Basic
// with an empty secret and, on any error, repeats the request with the
// credentials in the body. Treating the first attempt as a poll would make
// the repeat look like a poll that came too soon, and slow_down would
// lengthen that device's interval on every poll. Rejecting it before any
// storage is read costs one cheap round trip. A header without client_id in
// the body still identifies a public client, for libraries that only send
// the header.
func (e *Edge) authenticateClient(r *http.Request, form url.Values) (events.Client, error) {
	bodyID := form.Get("client_id")
	bodySecret := form.Get("client_secret")
	user, password, hasBasic := r.BasicAuth()

	if hasBasic && bodySecret != "" {
		return events.Client{}, oauth.ErrInvalidRequest.WithDescription("Use one client authentication method, not both HTTP Basic and client_secret.")
	}

	id, secret := bodyID, bodySecret
	if hasBasic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(user)
		secret, err2 = url.QueryUnescape(password)
		if err1 != nil || err2 != nil {
			return events.Client{}, oauth.ErrInvalidClient.WithDescription("The Authorization header is not valid HTTP Basic for OAuth.")
		}
		if bodyID != "" && bodyID != id {
			return events.Client{}, oauth.ErrInvalidClient.WithDescription("client_id in the body does not match the Authorization header.")
		}
	}
	if id == "" {
		return events.Client{}, oauth.ErrInvalidClient.WithDescription("client_id is missing.")
	}

	client, ok := e.clients.Lookup(id)
	if !ok {
		return events.Client{}, oauth.ErrInvalidClient.WithDescription("Unknown client %q.", id)
	}

	if client.Public {
		if secret != "" {
			return events.Client{}, oauth.ErrInvalidClient.WithDescription("A public client does not send a secret.")
		}
		if hasBasic && bodyID != "" {
			return events.Client{}, oauth.ErrInvalidClient.WithDescription("A public client sends client_id in the body, without an Authorization header.")
		}
		return client, e.checkOrigin(r, client)
	}

	if !clients.VerifySecret(client, secret) {
		return events.Client{}, oauth.ErrInvalidClient
	}
	return client, e.checkOrigin(r, client)
}
