package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/oauth"
)

// TestHostileInput sends malformed requests to every OAuth endpoint and
// checks the exact error, status and headers of each. None may produce a
// 5xx or a log line at error level.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	const form = "application/x-www-form-urlencoded"
	deviceGrant := "grant_type=" + url.QueryEscape(oauth.GrantTypeDeviceCode)
	tvBasic := http.Header{"Authorization": {"Basic dHYtYXBwOg=="}} // tv-app with an empty secret
	long := strings.Repeat("x", 3000)
	huge := strings.Repeat("a", 20<<10)

	type request struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		header      http.Header
		status      int
		code        string // empty for a success
	}
	cases := []request{
		// Wrong methods.
		{"device authorization with GET", http.MethodGet, edge.PathDeviceAuthorization, "", "", nil, 405, oauth.CodeInvalidRequest},
		{"device authorization with PUT", http.MethodPut, edge.PathDeviceAuthorization, form, "client_id=tv-app", nil, 405, oauth.CodeInvalidRequest},
		{"token with GET", http.MethodGet, edge.PathToken + "?" + deviceGrant, "", "", nil, 405, oauth.CodeInvalidRequest},
		{"token with DELETE", http.MethodDelete, edge.PathToken, "", "", nil, 405, oauth.CodeInvalidRequest},
		{"revocation with GET", http.MethodGet, edge.PathRevocation, "", "", nil, 405, oauth.CodeInvalidRequest},
		{"introspection with PUT", http.MethodPut, edge.PathIntrospection, form, "token=x", nil, 405, oauth.CodeInvalidRequest},
		{"metadata with POST", http.MethodPost, edge.PathMetadata, form, "", nil, 405, oauth.CodeInvalidRequest},
		{"JWKS with DELETE", http.MethodDelete, edge.PathJWKS, "", "", nil, 405, oauth.CodeInvalidRequest},
		{"unknown OAuth path", http.MethodPost, "/oauth/authorize", form, "", nil, 404, oauth.CodeInvalidRequest},

		// Wrong or missing content types, and JSON where a form is expected.
		{"device authorization as JSON", http.MethodPost, edge.PathDeviceAuthorization, "application/json", `{"client_id":"tv-app"}`, nil, 415, oauth.CodeInvalidRequest},
		{"token as JSON", http.MethodPost, edge.PathToken, "application/json", `{"grant_type":"refresh_token"}`, nil, 415, oauth.CodeInvalidRequest},
		{"token as text", http.MethodPost, edge.PathToken, "text/plain", deviceGrant, nil, 415, oauth.CodeInvalidRequest},
		{"token as multipart", http.MethodPost, edge.PathToken, "multipart/form-data; boundary=x", "--x--", nil, 415, oauth.CodeInvalidRequest},
		{"device authorization without content type", http.MethodPost, edge.PathDeviceAuthorization, "", "client_id=tv-app", nil, 415, oauth.CodeInvalidRequest},
		{"revocation without content type", http.MethodPost, edge.PathRevocation, "", "token=x&client_id=tv-app", nil, 415, oauth.CodeInvalidRequest},
		{"introspection as JSON", http.MethodPost, edge.PathIntrospection, "application/json", `{"token":"x"}`, nil, 415, oauth.CodeInvalidRequest},
		{"malformed content type", http.MethodPost, edge.PathToken, "application/x-www-form-urlencoded; =", deviceGrant, nil, 415, oauth.CodeInvalidRequest},

		// Repeated parameters (RFC 6749 section 3.2).
		{"repeated client_id", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&client_id=tv-app", nil, 400, oauth.CodeInvalidRequest},
		{"repeated scope", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&scope=profile&scope=profile", nil, 400, oauth.CodeInvalidRequest},
		{"repeated grant_type", http.MethodPost, edge.PathToken, form, deviceGrant + "&" + deviceGrant + "&client_id=tv-app", nil, 400, oauth.CodeInvalidRequest},
		{"repeated device_code", http.MethodPost, edge.PathToken, form, deviceGrant + "&client_id=tv-app&device_code=a&device_code=b", nil, 400, oauth.CodeInvalidRequest},
		{"repeated token on revocation", http.MethodPost, edge.PathRevocation, form, "client_id=tv-app&token=a&token=b", nil, 400, oauth.CodeInvalidRequest},

		// Missing and empty parameters.
		{"missing client", http.MethodPost, edge.PathDeviceAuthorization, form, "scope=profile", nil, 401, oauth.CodeInvalidClient},
		{"empty client_id", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=", nil, 401, oauth.CodeInvalidClient},
		{"missing grant_type", http.MethodPost, edge.PathToken, form, "client_id=tv-app&device_code=" + da.DeviceCode, nil, 400, oauth.CodeInvalidRequest},
		{"empty grant_type", http.MethodPost, edge.PathToken, form, "grant_type=&client_id=tv-app", nil, 400, oauth.CodeInvalidRequest},
		{"missing device_code", http.MethodPost, edge.PathToken, form, deviceGrant + "&client_id=tv-app", nil, 400, oauth.CodeInvalidRequest},
		{"empty device_code", http.MethodPost, edge.PathToken, form, deviceGrant + "&client_id=tv-app&device_code=", nil, 400, oauth.CodeInvalidRequest},
		{"missing refresh_token", http.MethodPost, edge.PathToken, form, "grant_type=refresh_token&client_id=tv-app", nil, 400, oauth.CodeInvalidRequest},
		{"missing token on revocation", http.MethodPost, edge.PathRevocation, form, "client_id=tv-app", nil, 400, oauth.CodeInvalidRequest},
		{"empty body on token", http.MethodPost, edge.PathToken, form, "", nil, 400, oauth.CodeInvalidRequest},

		// Unknown grant types.
		{"password grant", http.MethodPost, edge.PathToken, form, "grant_type=password&client_id=tv-app&username=demo&password=demo", nil, 400, oauth.CodeUnsupportedGrantType},
		{"authorization code grant", http.MethodPost, edge.PathToken, form, "grant_type=authorization_code&client_id=tv-app&code=x", nil, 400, oauth.CodeUnsupportedGrantType},
		{"client credentials grant", http.MethodPost, edge.PathToken, form, "grant_type=client_credentials&client_id=tv-app", nil, 400, oauth.CodeUnsupportedGrantType},
		{"JWT bearer grant", http.MethodPost, edge.PathToken, form, "grant_type=" + url.QueryEscape("urn:ietf:params:oauth:grant-type:jwt-bearer") + "&client_id=tv-app", nil, 400, oauth.CodeUnsupportedGrantType},
		{"refresh grant for a client without it", http.MethodPost, edge.PathToken, form, "grant_type=refresh_token&client_id=other-app&refresh_token=x", nil, 400, oauth.CodeUnauthorizedClient},

		// Over-long values and bodies over the limit.
		{"over-long client_id", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=" + long, nil, 400, oauth.CodeInvalidRequest},
		{"over-long device_code", http.MethodPost, edge.PathToken, form, deviceGrant + "&client_id=tv-app&device_code=" + long, nil, 400, oauth.CodeInvalidRequest},
		{"device authorization body over the limit", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&pad=" + huge, nil, 413, oauth.CodeInvalidRequest},
		{"token body over the limit", http.MethodPost, edge.PathToken, form, "grant_type=" + huge, nil, 413, oauth.CodeInvalidRequest},
		{"revocation body over the limit", http.MethodPost, edge.PathRevocation, form, "token=" + huge, nil, 413, oauth.CodeInvalidRequest},

		// Broken encodings.
		{"malformed percent encoding", http.MethodPost, edge.PathToken, form, "grant_type=%zz", nil, 400, oauth.CodeInvalidRequest},
		{"invalid UTF-8 value", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=%ff%fe", nil, 400, oauth.CodeInvalidRequest},
		{"invalid UTF-8 name", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&%c3%28=x", nil, 400, oauth.CodeInvalidRequest},
		{"malformed device code", http.MethodPost, edge.PathToken, form, deviceGrant + "&client_id=tv-app&device_code=%00%01", nil, 400, oauth.CodeInvalidGrant},

		// Scopes.
		{"unknown scope", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&scope=profile+admin", nil, 400, oauth.CodeInvalidScope},
		{"scope another client has", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=other-app&scope=offline_access", nil, 400, oauth.CodeInvalidScope},
		{"scope with a quote", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&scope=%22profile%22", nil, 400, oauth.CodeInvalidScope},
		{"scope with a control character", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&scope=pro%01file", nil, 400, oauth.CodeInvalidScope},

		// Client authentication.
		{"unknown client", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=nobody", nil, 401, oauth.CodeInvalidClient},
		{"public client with a secret", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&client_secret=x", nil, 401, oauth.CodeInvalidClient},
		{"header and body client ids differ", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=other-app", tvBasic, 401, oauth.CodeInvalidClient},
		{"Basic and client_secret together", http.MethodPost, edge.PathToken, form, deviceGrant + "&client_secret=x&device_code=" + da.DeviceCode, tvBasic, 400, oauth.CodeInvalidRequest},
		{"Basic header not base64", http.MethodPost, edge.PathDeviceAuthorization, form, "scope=profile", http.Header{"Authorization": {"Basic !!!"}}, 401, oauth.CodeInvalidClient},
		{"Basic header with bad escaping", http.MethodPost, edge.PathDeviceAuthorization, form, "", http.Header{"Authorization": {"Basic dHYlWlo6"}}, 401, oauth.CodeInvalidClient},
		{"introspection by a public client", http.MethodPost, edge.PathIntrospection, form, "client_id=tv-app&token=x", nil, 401, oauth.CodeInvalidClient},
		{"introspection without a client", http.MethodPost, edge.PathIntrospection, form, "token=x", nil, 401, oauth.CodeInvalidClient},
		{"revocation with an unknown hint", http.MethodPost, edge.PathRevocation, form, "client_id=tv-app&token=x&token_type_hint=id_token", nil, 400, oauth.CodeUnsupportedTokenType},

		// What must still succeed.
		{"form with a charset", http.MethodPost, edge.PathDeviceAuthorization, form + "; charset=UTF-8", "client_id=tv-app", nil, 200, ""},
		{"unknown parameter ignored", http.MethodPost, edge.PathDeviceAuthorization, form, "client_id=tv-app&colour=blue", nil, 200, ""},
		{"query parameters ignored", http.MethodPost, edge.PathDeviceAuthorization + "?client_id=nobody", form, "client_id=tv-app", nil, 200, ""},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d hostile requests; keep at least 40", len(cases))
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, sys.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatalf("build request: %v", err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp := sys.do(req)

			if tc.code == "" {
				if resp.StatusCode != tc.status {
					t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, resp.Body)
				}
				return
			}
			assertOAuthError(t, resp, tc.status, tc.code)
			if tc.status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tc.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}

	if n := sys.errorLogs.Load(); n != 0 {
		t.Errorf("%d log lines at error level for client mistakes, want 0", n)
	}
}
