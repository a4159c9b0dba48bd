package edge

import (
	"net/http"
	"net/url"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/clients"
	"github.com/streamco/deviceauth/internal/oauth"
)

// corsMaxAge is the time in seconds a browser may cache a preflight.
const corsMaxAge = "600"

// cors lets HTML5 TV apps call the device authorization and token endpoints
// from the origins their clients list. A preflight carries no client_id, so
// it is allowed for any origin some client lists. checkOrigin then checks the
// request itself against its own client.
func (e *Edge) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Add("Vary", "Origin")
		allowed := e.clients.AnyAllowsOrigin(origin)

		if r.Method == http.MethodOptions {
			if !allowed || r.Header.Get("Access-Control-Request-Method") != http.MethodPost {
				oauth.WriteError(w, oauth.ErrInvalidRequest.
					WithDescription("Cross-origin requests from %s are not allowed.", origin).
					WithStatus(http.StatusForbidden))
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", http.MethodPost)
			h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, Prefer")
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}

		if allowed {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Expose-Headers", "Preference-Applied, WWW-Authenticate")
		}
		next.ServeHTTP(w, r)
	})
}

// checkOrigin rejects a browser request from an origin that client does not
// list. Requests without Origin (native apps, devices) and requests from the
// edge's own origin pass.
func (e *Edge) checkOrigin(r *http.Request, client events.Client) error {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == e.origin || clients.AllowsOrigin(client, origin) {
		return nil
	}
	return oauth.ErrUnauthorizedClient.
		WithDescription("Requests from origin %s are not allowed for this client.", origin).
		WithStatus(http.StatusForbidden)
}

// originOf returns the Origin a browser sends for pages at publicURL, which
// Validate has checked is an absolute http or https URL.
func originOf(publicURL string) string {
	u, err := url.Parse(publicURL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
