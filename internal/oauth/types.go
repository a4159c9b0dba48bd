package oauth

// Grant type identifiers.
const (
	GrantTypeDeviceCode   = "urn:ietf:params:oauth:grant-type:device_code"
	GrantTypeRefreshToken = "refresh_token"
)

// TokenResponse is the successful token response of RFC 6749 section 5.1.
// The issuer seals it in this form and the edge sends it unchanged.
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// DeviceAuthorizationResponse is the response of RFC 8628 section 3.2.
type DeviceAuthorizationResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}
