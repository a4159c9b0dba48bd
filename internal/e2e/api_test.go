package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/oauth"
)

// app is the service's phone app: a JSON client with a cookie jar.
type app struct {
	t      testing.TB
	client *http.Client
	base   string
}

func (s *system) newApp() *app {
	jar, _ := cookiejar.New(nil)
	return &app{t: s.t, base: s.URL, client: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

// call posts body as JSON, with extra headers, and returns the response.
func (a *app) call(path, body string, header http.Header) response {
	a.t.Helper()
	req, err := http.NewRequestWithContext(a.t.Context(), http.MethodPost, a.base+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatalf("build request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{StatusCode: resp.StatusCode, Header: resp.Header, Body: data}
}

func (a *app) signIn(username, password string) {
	a.t.Helper()
	body, _ := json.Marshal(map[string]string{"username": username, "password": password})
	if resp := a.call(edge.PathAPISignIn, string(body), nil); resp.StatusCode != http.StatusOK {
		a.t.Fatalf("API sign-in: status %d: %s", resp.StatusCode, resp.Body)
	}
}

func TestApprovalAPIApproves(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	cfg := sys.oauthConfig(devstack.DemoClientID, "profile", "offline_access")
	ctx := contextWithClient(withTimeout(t, 30*time.Second), &http.Client{Transport: preferWait{hold: 20}})
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	a := sys.newApp()
	a.signIn(devstack.DemoUsername, devstack.DemoPassword)

	lookup := a.call(edge.PathAPILookup, `{"user_code":"`+strings.ToLower(da.UserCode)+`"}`, nil)
	if lookup.StatusCode != http.StatusOK {
		t.Fatalf("lookup: status %d: %s", lookup.StatusCode, lookup.Body)
	}
	var details struct {
		UserCode   string `json:"user_code"`
		ClientName string `json:"client_name"`
		Scopes     []struct{ Scope, Description string }
	}
	if err := json.Unmarshal(lookup.Body, &details); err != nil {
		t.Fatalf("decode lookup: %v", err)
	}
	if details.UserCode != da.UserCode || details.ClientName != "StreamCo TV" || len(details.Scopes) != 2 || details.Scopes[0].Description == "" {
		t.Errorf("lookup returned %+v, want the code, StreamCo TV and two described scopes", details)
	}

	decided := a.call(edge.PathAPIDecision, `{"user_code":"`+da.UserCode+`","decision":"approve"}`, http.Header{"Origin": {sys.URL}})
	if decided.StatusCode != http.StatusOK {
		t.Fatalf("decision: status %d: %s", decided.StatusCode, decided.Body)
	}
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("DeviceAccessToken after the API approval: %v", err)
	}
	if tok.AccessToken == "" {
		t.Error("no access token after the API approval")
	}
}

func TestApprovalAPIDenies(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	a := sys.newApp()
	a.signIn(devstack.DemoUsername, devstack.DemoPassword)

	if resp := a.call(edge.PathAPIDecision, `{"user_code":"`+da.UserCode+`","decision":"deny"}`, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("decision: status %d: %s", resp.StatusCode, resp.Body)
	}
	sys.waitForState(da.DeviceCode, "denied")
}

func TestApprovalAPIRejects(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	approve := `{"user_code":"` + da.UserCode + `","decision":"approve"}`

	anonymous := sys.newApp()
	assertOAuthError(t, anonymous.call(edge.PathAPIDecision, approve, nil), http.StatusUnauthorized, "login_required")

	a := sys.newApp()
	a.signIn(devstack.DemoUsername, devstack.DemoPassword)
	cases := []struct {
		name   string
		path   string
		body   string
		header http.Header
		status int
		code   string
	}{
		{"request from another site", edge.PathAPIDecision, approve, http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden, oauth.CodeInvalidRequest},
		{"fetch from another site", edge.PathAPIDecision, approve, http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden, oauth.CodeInvalidRequest},
		{"form encoding", edge.PathAPIDecision, "user_code=x", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, http.StatusUnsupportedMediaType, oauth.CodeInvalidRequest},
		{"text/plain", edge.PathAPIDecision, approve, http.Header{"Content-Type": {"text/plain"}}, http.StatusUnsupportedMediaType, oauth.CodeInvalidRequest},
		{"malformed JSON", edge.PathAPIDecision, `{"user_code":`, nil, http.StatusBadRequest, oauth.CodeInvalidRequest},
		{"unknown field", edge.PathAPIDecision, `{"user_code":"` + da.UserCode + `","decision":"approve","account_id":"x"}`, nil, http.StatusBadRequest, oauth.CodeInvalidRequest},
		{"two objects", edge.PathAPIDecision, approve + approve, nil, http.StatusBadRequest, oauth.CodeInvalidRequest},
		{"huge body", edge.PathAPIDecision, `{"user_code":"` + strings.Repeat("B", 10<<10) + `"}`, nil, http.StatusRequestEntityTooLarge, oauth.CodeInvalidRequest},
		{"missing decision", edge.PathAPIDecision, `{"user_code":"` + da.UserCode + `"}`, nil, http.StatusBadRequest, oauth.CodeInvalidRequest},
		{"malformed code", edge.PathAPILookup, `{"user_code":"AEIOU"}`, nil, http.StatusBadRequest, oauth.CodeInvalidRequest},
		{"unknown code", edge.PathAPILookup, `{"user_code":"BBBB-BBBB"}`, nil, http.StatusNotFound, "unknown_code"},
		{"unknown endpoint", edge.PathAPI + "/approve", approve, nil, http.StatusNotFound, oauth.CodeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assertOAuthError(t, a.call(tc.path, tc.body, tc.header), tc.status, tc.code)
		})
	}

	wrongPassword := sys.newApp().call(edge.PathAPISignIn, `{"username":"demo","password":"nope"}`, nil)
	assertOAuthError(t, wrongPassword, http.StatusUnauthorized, "invalid_credentials")

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, sys.URL+edge.PathAPIDecision, nil)
	if resp := sys.do(req); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET decision: status %d, Allow %q, want 405 and POST", resp.StatusCode, resp.Header.Get("Allow"))
	}

	// None of the rejected requests decided anything.
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeAuthorizationPending)
}
