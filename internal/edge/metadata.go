package edge

import (
	"encoding/json"
	"net/http"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/oauth"
)

// serverMetadata is the authorization server metadata of RFC 8414 section 2,
// listing only what this server implements.
type serverMetadata struct {
	Issuer                                    string   `json:"issuer"`
	TokenEndpoint                             string   `json:"token_endpoint"`
	DeviceAuthorizationEndpoint               string   `json:"device_authorization_endpoint"`
	RevocationEndpoint                        string   `json:"revocation_endpoint"`
	IntrospectionEndpoint                     string   `json:"introspection_endpoint"`
	JWKSURI                                   string   `json:"jwks_uri"`
	GrantTypesSupported                       []string `json:"grant_types_supported"`
	ResponseTypesSupported                    []string `json:"response_types_supported"`
	TokenEndpointAuthMethodsSupported         []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported    []string `json:"revocation_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported"`
	ScopesSupported                           []string `json:"scopes_supported"`
}

func (e *Edge) metadata(w http.ResponseWriter, _ *http.Request) {
	clientAuth := []string{"none", "client_secret_basic", "client_secret_post"}
	md := serverMetadata{
		Issuer:                      e.issuer,
		TokenEndpoint:               e.url(PathToken),
		DeviceAuthorizationEndpoint: e.url(PathDeviceAuthorization),
		RevocationEndpoint:          e.url(PathRevocation),
		IntrospectionEndpoint:       e.url(PathIntrospection),
		JWKSURI:                     e.url(PathJWKS),
		GrantTypesSupported:         []string{oauth.GrantTypeDeviceCode, oauth.GrantTypeRefreshToken},
		// There is no authorization endpoint, so there are no response
		// types. RFC 8414 section 2 requires the member, and an empty list
		// is the truth.
		ResponseTypesSupported:                    []string{},
		TokenEndpointAuthMethodsSupported:         clientAuth,
		RevocationEndpointAuthMethodsSupported:    clientAuth,
		IntrospectionEndpointAuthMethodsSupported: []string{"client_secret_basic", "client_secret_post"},
		ScopesSupported:                           e.clients.Scopes(),
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(md)
}

// jwks serves the public keys the issuers published (RFC 7517 section 5),
// as the edge's watch of the key set last delivered them.
func (e *Edge) jwks(w http.ResponseWriter, _ *http.Request) {
	set := events.KeySet{Keys: []events.JWK{}}
	if published := e.keySet.Load(); published != nil {
		set = *published
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	// Short, so a rotated-in key reaches resource servers quickly.
	w.Header().Set("Cache-Control", "public, max-age=60")
	_ = json.NewEncoder(w).Encode(set)
}
