package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/admin"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

func (s *system) refresh(clientID, refreshToken, scope string) response {
	s.t.Helper()
	form := url.Values{"grant_type": {oauth.GrantTypeRefreshToken}, "client_id": {clientID}, "refresh_token": {refreshToken}}
	if scope != "" {
		form.Set("scope", scope)
	}
	return s.postForm(edge.PathToken, form, nil)
}

// createClient stores a client through the admin package, as the admin
// command does, and returns its secret (empty for a public client).
func (s *system) createClient(c events.Client) string {
	s.t.Helper()
	js, _ := jetstream.New(s.conn())
	bucket, err := js.KeyValue(s.t.Context(), events.BucketClients)
	if err != nil {
		s.t.Fatalf("open clients bucket: %v", err)
	}
	secret, err := admin.CreateClient(s.t.Context(), kv.New[events.Client](bucket), c)
	if err != nil {
		s.t.Fatalf("create client: %v", err)
	}
	return secret
}

func TestRefreshTokenRotates(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	first := sys.connectDevice("profile offline_access")
	refresh1, _ := first["refresh_token"].(string)
	if refresh1 == "" {
		t.Fatal("no refresh token for offline_access")
	}

	resp := sys.refresh(devstack.DemoClientID, refresh1, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh: status %d: %s", resp.StatusCode, resp.Body)
	}
	second := resp.json(t)
	refresh2, _ := second["refresh_token"].(string)
	if refresh2 == "" || refresh2 == refresh1 {
		t.Errorf("refresh token not rotated: %q", refresh2)
	}
	if second["access_token"] == first["access_token"] {
		t.Error("refresh returned the same access token")
	}
	if second["scope"] != "profile offline_access" {
		t.Errorf("scope %v, want the granted scope", second["scope"])
	}
	verifyWithJWKS(t, sys, second["access_token"].(string))

	narrowed := sys.refresh(devstack.DemoClientID, refresh2, "profile")
	if narrowed.StatusCode != http.StatusOK {
		t.Fatalf("refresh with a narrower scope: status %d: %s", narrowed.StatusCode, narrowed.Body)
	}
	if got := narrowed.json(t)["scope"]; got != "profile" {
		t.Errorf("narrowed scope %v, want profile", got)
	}
}

func TestRefreshTokenReuseRevokesGrant(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	refresh1 := sys.connectDevice("profile offline_access")["refresh_token"].(string)

	resp := sys.refresh(devstack.DemoClientID, refresh1, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh: status %d: %s", resp.StatusCode, resp.Body)
	}
	refresh2 := resp.json(t)["refresh_token"].(string)

	assertOAuthError(t, sys.refresh(devstack.DemoClientID, refresh1, ""), http.StatusBadRequest, oauth.CodeInvalidGrant)
	// The replay revoked the grant, so the token the rightful holder has
	// stops working too.
	assertOAuthError(t, sys.refresh(devstack.DemoClientID, refresh2, ""), http.StatusBadRequest, oauth.CodeInvalidGrant)
}

func TestRefreshTokenRules(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	refresh := sys.connectDevice("profile offline_access")["refresh_token"].(string)

	assertOAuthError(t, sys.refresh(devstack.DemoClientID, refresh, "profile admin"), http.StatusBadRequest, oauth.CodeInvalidScope)
	assertOAuthError(t, sys.refresh(otherClientID, refresh, ""), http.StatusBadRequest, oauth.CodeUnauthorizedClient)
	assertOAuthError(t, sys.refresh(devstack.DemoClientID, "not-a-token", ""), http.StatusBadRequest, oauth.CodeInvalidGrant)

	// A client allowed the grant but not the token's own client.
	sys.seedClient(events.Client{ID: "third-app", Name: "Third", Public: true, Scopes: []string{"profile"},
		Grants: []string{oauth.GrantTypeDeviceCode, oauth.GrantTypeRefreshToken}})
	assertOAuthError(t, sys.refresh("third-app", refresh, ""), http.StatusBadRequest, oauth.CodeInvalidGrant)

	// None of the rejections above used the token up.
	if resp := sys.refresh(devstack.DemoClientID, refresh, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("refresh after rejected attempts: status %d: %s", resp.StatusCode, resp.Body)
	}
}

func TestNoRefreshTokenWithoutOfflineAccess(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	tokens := sys.connectDevice("profile")
	if _, ok := tokens["refresh_token"]; ok {
		t.Error("refresh token issued without offline_access")
	}
}

func TestRevocationEndsGrant(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	tokens := sys.connectDevice("profile offline_access")
	refresh := tokens["refresh_token"].(string)
	access := tokens["access_token"].(string)

	revoke := func(clientID, token string) response {
		return sys.postForm(edge.PathRevocation, url.Values{"client_id": {clientID}, "token": {token}}, nil)
	}

	if resp := revoke(otherClientID, refresh); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("revocation by another client: status %d, want 400", resp.StatusCode)
	}
	resp := revoke(devstack.DemoClientID, access)
	assertOAuthError(t, resp, http.StatusBadRequest, oauth.CodeUnsupportedTokenType)

	if resp := revoke(devstack.DemoClientID, refresh); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke refresh token: status %d: %s", resp.StatusCode, resp.Body)
	}
	assertOAuthError(t, sys.refresh(devstack.DemoClientID, refresh, ""), http.StatusBadRequest, oauth.CodeInvalidGrant)

	if resp := revoke(devstack.DemoClientID, refresh); resp.StatusCode != http.StatusOK {
		t.Errorf("revoking again: status %d, want 200", resp.StatusCode)
	}
	if resp := revoke(devstack.DemoClientID, "unknown-token"); resp.StatusCode != http.StatusOK {
		t.Errorf("revoking an unknown token: status %d, want 200", resp.StatusCode)
	}
	assertOAuthError(t, revoke(devstack.DemoClientID, ""), http.StatusBadRequest, oauth.CodeInvalidRequest)
	assertOAuthError(t, revoke("nobody", refresh), http.StatusUnauthorized, oauth.CodeInvalidClient)
}

func TestIntrospection(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	secret := sys.createClient(events.Client{ID: "streaming-api", Name: "Streaming API", Grants: []string{oauth.GrantTypeRefreshToken}})
	waitFor(t, 2*time.Second, "edge to see the resource server client", func() bool {
		return sys.introspect("streaming-api", secret, "x").StatusCode == http.StatusOK
	})

	tokens := sys.connectDevice("profile offline_access")
	access := tokens["access_token"].(string)
	refresh := tokens["refresh_token"].(string)

	active := sys.introspect("streaming-api", secret, access).json(t)
	if active["active"] != true {
		t.Fatalf("access token inactive: %v", active)
	}
	for name, want := range map[string]any{"client_id": devstack.DemoClientID, "scope": "profile offline_access", "token_type": "Bearer", "iss": sys.URL} {
		if active[name] != want {
			t.Errorf("introspection %s = %v, want %v", name, active[name], want)
		}
	}
	if sub, _ := active["sub"].(string); !strings.HasPrefix(sub, "acct_") {
		t.Errorf("introspection sub %q", sub)
	}

	if got := sys.introspect("streaming-api", secret, refresh).json(t); got["active"] != true || got["token_type"] != "refresh_token" {
		t.Errorf("refresh token introspection %v, want active refresh_token", got)
	}

	for name, token := range map[string]string{
		"garbage":         "garbage",
		"unsigned":        noneAlgToken(t, access),
		"tampered":        tamperedToken(t, access),
		"empty signature": access[:strings.LastIndex(access, ".")+1],
	} {
		got := sys.introspect("streaming-api", secret, token)
		if got.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d, want 200", name, got.StatusCode)
			continue
		}
		if body := got.json(t); len(body) != 1 || body["active"] != false {
			t.Errorf("%s token: %v, want only active false", name, body)
		}
	}

	if resp := sys.introspect("streaming-api", "wrong-secret", access); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong secret: status %d, want 401", resp.StatusCode)
	}
	public := sys.postForm(edge.PathIntrospection, url.Values{"client_id": {devstack.DemoClientID}, "token": {access}}, nil)
	assertOAuthError(t, public, http.StatusUnauthorized, oauth.CodeInvalidClient)
}

func (s *system) introspect(clientID, secret, token string) response {
	s.t.Helper()
	header := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(secret)))}}
	return s.postForm(edge.PathIntrospection, url.Values{"token": {token}}, header)
}

// noneAlgToken re-encodes token's claims with "alg":"none" and no signature.
func noneAlgToken(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`))
	return header + "." + parts[1] + "."
}

// tamperedToken changes the scope claim of token and keeps its signature.
func tamperedToken(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	var claims map[string]any
	_ = json.Unmarshal(payload, &claims)
	claims["scope"] = "admin"
	changed, _ := json.Marshal(claims)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(changed) + "." + parts[2]
}

func TestKeyRotationKeepsOldTokensValid(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	before := sys.connectDevice("profile")["access_token"].(string)

	msg, err := sys.conn().Request(events.SubjectRotateKeys, nil, 10*time.Second)
	if err != nil {
		t.Fatalf("rotation request: %v", err)
	}
	var reply events.RotateKeysReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.KeyID == "" {
		t.Fatalf("rotation reply %s: %v", msg.Data, err)
	}

	waitFor(t, 5*time.Second, "the JWKS to carry both keys", func() bool {
		keys, _ := sys.do(mustRequest(t, http.MethodGet, sys.URL+edge.PathJWKS)).json(t)["keys"].([]any)
		return len(keys) == 2
	})
	after := sys.connectDevice("profile")["access_token"].(string)

	verifyWithJWKS(t, sys, before)
	verifyWithJWKS(t, sys, after)
	if kidOf(t, before) == kidOf(t, after) {
		t.Errorf("token after rotation signed with the old key %s", kidOf(t, after))
	}
	if kidOf(t, after) != reply.KeyID {
		t.Errorf("new token kid %s, want the rotated key %s", kidOf(t, after), reply.KeyID)
	}
}

func kidOf(t *testing.T, token string) string {
	t.Helper()
	header, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatalf("decode header: %v", err)
	}
	var h map[string]any
	_ = json.Unmarshal(header, &h)
	kid, _ := h["kid"].(string)
	return kid
}

func TestConfidentialClientAuthentication(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	secret := sys.createClient(events.Client{ID: "console-app", Name: "Console", Scopes: []string{"profile"},
		Grants: []string{oauth.GrantTypeDeviceCode}})
	basic := func(id, secret string) http.Header {
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))}}
	}
	waitFor(t, 2*time.Second, "edge to see console-app", func() bool {
		return sys.postForm(edge.PathDeviceAuthorization, url.Values{}, basic("console-app", secret)).StatusCode == http.StatusOK
	})

	if resp := sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {"console-app"}, "client_secret": {secret}}, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("client_secret_post: status %d: %s", resp.StatusCode, resp.Body)
	}
	assertOAuthError(t, sys.postForm(edge.PathDeviceAuthorization, url.Values{}, basic("console-app", "wrong")), http.StatusUnauthorized, oauth.CodeInvalidClient)
	assertOAuthError(t, sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {"console-app"}}, nil), http.StatusUnauthorized, oauth.CodeInvalidClient)
	assertOAuthError(t, sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_secret": {secret}}, basic("console-app", secret)), http.StatusBadRequest, oauth.CodeInvalidRequest)
}

func TestClientChangesReachEdgeQuickly(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	sys.createClient(events.Client{ID: "kiosk", Name: "Kiosk", Public: true, Scopes: []string{"profile"},
		Grants: []string{oauth.GrantTypeDeviceCode}, IntervalSeconds: 7, CodeLifetimeSeconds: 120})
	authorize := func() response {
		return sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {"kiosk"}}, nil)
	}
	waitFor(t, time.Second, "a new client to work", func() bool { return authorize().StatusCode == http.StatusOK })

	da := authorize().json(t)
	if da["interval"] != float64(7) || da["expires_in"] != float64(120) {
		t.Errorf("interval %v and expires_in %v, want the client's own 7 and 120", da["interval"], da["expires_in"])
	}

	js, _ := jetstream.New(sys.conn())
	raw, _ := js.KeyValue(t.Context(), events.BucketClients)
	bucket := kv.New[events.Client](raw)
	if _, err := admin.UpdateClient(t.Context(), bucket, "kiosk", func(c *events.Client) error {
		c.DeviceFlowDisabled = true
		return nil
	}); err != nil {
		t.Fatalf("update client: %v", err)
	}
	waitFor(t, time.Second, "the device flow switch to apply", func() bool {
		return authorize().errorCode(t) == oauth.CodeUnauthorizedClient
	})

	if err := bucket.Delete(t.Context(), "kiosk"); err != nil {
		t.Fatalf("delete client: %v", err)
	}
	waitFor(t, time.Second, "the deleted client to be rejected", func() bool {
		return authorize().errorCode(t) == oauth.CodeInvalidClient
	})
}

func TestCORS(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	sys.createClient(events.Client{ID: "html5-tv", Name: "HTML5 TV", Public: true, Scopes: []string{"profile"},
		Grants: []string{oauth.GrantTypeDeviceCode}, AllowedOrigins: []string{"https://tv.example"}})
	waitFor(t, time.Second, "edge to see html5-tv", func() bool {
		return sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {"html5-tv"}}, nil).StatusCode == http.StatusOK
	})

	preflight := func(origin string) response {
		req := mustRequest(t, http.MethodOptions, sys.URL+edge.PathToken)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", http.MethodPost)
		req.Header.Set("Access-Control-Request-Headers", "content-type, prefer")
		return sys.do(req)
	}
	ok := preflight("https://tv.example")
	if ok.StatusCode != http.StatusNoContent {
		t.Errorf("preflight status %d, want 204", ok.StatusCode)
	}
	if got := ok.Header.Get("Access-Control-Allow-Origin"); got != "https://tv.example" {
		t.Errorf("Access-Control-Allow-Origin %q", got)
	}
	if got := ok.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(got, "Prefer") {
		t.Errorf("Access-Control-Allow-Headers %q does not allow Prefer", got)
	}
	if bad := preflight("https://evil.example"); bad.StatusCode != http.StatusForbidden || bad.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from an unknown origin: status %d, allow-origin %q", bad.StatusCode, bad.Header.Get("Access-Control-Allow-Origin"))
	}

	fromTV := sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {"html5-tv"}}, http.Header{"Origin": {"https://tv.example"}})
	if fromTV.StatusCode != http.StatusOK || fromTV.Header.Get("Access-Control-Allow-Origin") != "https://tv.example" {
		t.Errorf("request from the allowed origin: status %d, allow-origin %q", fromTV.StatusCode, fromTV.Header.Get("Access-Control-Allow-Origin"))
	}
	// The origin belongs to html5-tv, not to tv-app.
	other := sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {devstack.DemoClientID}}, http.Header{"Origin": {"https://tv.example"}})
	assertOAuthError(t, other, http.StatusForbidden, oauth.CodeUnauthorizedClient)
}

func TestES256SignedTokens(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, func(cfg *devstack.Config) { cfg.Issuer.Algorithm = "ES256" })
	secret := sys.createClient(events.Client{ID: "streaming-api", Name: "Streaming API", Grants: []string{oauth.GrantTypeRefreshToken}})
	waitFor(t, 2*time.Second, "edge to see the resource server client", func() bool {
		return sys.introspect("streaming-api", secret, "x").StatusCode == http.StatusOK
	})

	access := sys.connectDevice("profile")["access_token"].(string)
	header, _ := base64.RawURLEncoding.DecodeString(strings.Split(access, ".")[0])
	if !strings.Contains(string(header), `"alg":"ES256"`) {
		t.Errorf("token header %s, want ES256", header)
	}
	if got := sys.introspect("streaming-api", secret, access).json(t); got["active"] != true {
		t.Errorf("ES256 token inactive: %v", got)
	}

	keys, _ := sys.do(mustRequest(t, http.MethodGet, sys.URL+edge.PathJWKS)).json(t)["keys"].([]any)
	if len(keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(keys))
	}
	if key := keys[0].(map[string]any); key["kty"] != "EC" || key["crv"] != "P-256" || key["alg"] != "ES256" {
		t.Errorf("JWKS key %v, want an EC P-256 key for ES256", key)
	}
}
