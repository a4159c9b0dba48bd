package e2e

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
)

// TestDeviceFlowWithOAuth2Library plays the TV with golang.org/x/oauth2,
// unmodified and with its default settings, and the phone with a cookie-jar
// HTTP client, against the real edge, approver and issuer.
func TestDeviceFlowWithOAuth2Library(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	cfg := sys.oauthConfig(devstack.DemoClientID, "profile", "offline_access")
	ctx := withTimeout(t, 30*time.Second)

	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	if len(da.UserCode) != 9 || da.UserCode[4] != '-' {
		t.Errorf("user code %q, want the XXXX-XXXX form", da.UserCode)
	}
	if da.VerificationURI != sys.URL+edge.PathDevice {
		t.Errorf("verification_uri %q, want %q", da.VerificationURI, sys.URL+edge.PathDevice)
	}
	if !strings.HasPrefix(da.VerificationURIComplete, sys.URL+edge.PathDevice+"?user_code=") {
		t.Errorf("verification_uri_complete %q does not carry the user code", da.VerificationURIComplete)
	}
	if da.Interval != 1 {
		t.Errorf("interval %d, want the configured 1", da.Interval)
	}

	approved := make(chan page, 1)
	go func() {
		// Approve once the device has polled at least once, so the flow
		// passes through authorization_pending.
		sys.waitForPoll(da.DeviceCode)
		approved <- sys.newPhone().decide(da.VerificationURIComplete, "approve")
	}()

	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("DeviceAccessToken: %v", err)
	}
	result := <-approved
	if result.title() != "Device connected" {
		t.Errorf("phone ended on %q, want %q", result.title(), "Device connected")
	}

	if tok.TokenType != "Bearer" {
		t.Errorf("token_type %q, want Bearer", tok.TokenType)
	}
	if tok.RefreshToken == "" {
		t.Error("no refresh token, although offline_access was granted")
	}
	if tok.ExpiresIn != 3600 {
		t.Errorf("expires_in %d, want 3600", tok.ExpiresIn)
	}
	if scope, _ := tok.Extra("scope").(string); scope != "profile offline_access" {
		t.Errorf("scope %q, want %q", scope, "profile offline_access")
	}

	claims := verifyWithJWKS(t, sys, tok.AccessToken)
	for name, want := range map[string]any{
		"iss":       sys.URL,
		"aud":       devstack.DefaultAudience,
		"client_id": devstack.DemoClientID,
		"scope":     "profile offline_access",
		// Added so a device can show who it is signed in as.
		"preferred_username": devstack.DemoUsername,
	} {
		if got := claims[name]; got != want {
			t.Errorf("claim %s = %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"sub", "exp", "iat", "jti"} {
		if _, ok := claims[name]; !ok {
			t.Errorf("claim %s is missing", name)
		}
	}
	if sub, _ := claims["sub"].(string); !strings.HasPrefix(sub, "acct_") {
		t.Errorf("sub %q is not the demo account id", sub)
	}
}

// TestDeviceFlowLongPoll has the device hold its poll with Prefer: wait and
// expects the token within moments of the approval.
func TestDeviceFlowLongPoll(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	cfg := sys.oauthConfig(devstack.DemoClientID, "profile")
	base := &http.Client{Transport: preferWait{hold: 20}}
	ctx := withTimeout(t, 30*time.Second)
	ctx = contextWithClient(ctx, base)

	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}

	decisionStarted := make(chan time.Time, 1)
	go func() {
		// The poll is recorded after the edge subscribed to the code's
		// changes, so from then on the approval reaches the held poll.
		sys.waitForPoll(da.DeviceCode)
		ph := sys.newPhone()
		ph.decideAndSignal(da.VerificationURIComplete, "approve", decisionStarted)
	}()

	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("DeviceAccessToken: %v", err)
	}
	approvedAt := <-decisionStarted
	if tok.AccessToken == "" {
		t.Fatal("no access token")
	}
	// The phone's last request starts at approvedAt; the token must follow
	// within moments, not at the next poll interval.
	if elapsed := time.Since(approvedAt); elapsed > 900*time.Millisecond {
		t.Errorf("token arrived %s after the approval started, want well under the 1s poll interval", elapsed)
	}
	if tok.Extra("scope") != "profile" {
		t.Errorf("scope %v, want profile", tok.Extra("scope"))
	}
}

// preferWait adds "Prefer: wait=N" to token requests, the only change a
// device needs to hold its polls.
type preferWait struct{ hold int }

func (p preferWait) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, edge.PathToken) {
		req = req.Clone(req.Context())
		req.Header.Set("Prefer", "wait="+itoa(p.hold))
	}
	return http.DefaultTransport.RoundTrip(req)
}

// verifyWithJWKS checks an access token's signature with the keys served at
// the JWKS endpoint, accepting RS256 only, and returns its claims.
func verifyWithJWKS(t *testing.T, sys *system, token string) jwt.MapClaims {
	t.Helper()
	resp, err := http.Get(sys.URL + edge.PathJWKS)
	if err != nil {
		t.Fatalf("GET JWKS: %v", err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kty, Kid, Alg, Use, N, E string
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("decode JWKS: %v", err)
	}

	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(token, claims, func(tok *jwt.Token) (any, error) {
		if typ, _ := tok.Header["typ"].(string); typ != "at+jwt" {
			return nil, errors.New("typ is not at+jwt")
		}
		kid, _ := tok.Header["kid"].(string)
		for _, k := range set.Keys {
			if k.Kid != kid || k.Kty != "RSA" {
				continue
			}
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err1 != nil || err2 != nil {
				return nil, errors.New("bad key encoding")
			}
			return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
		}
		return nil, errors.New("no key with kid " + kid)
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(sys.URL), jwt.WithAudience(devstack.DefaultAudience))
	if err != nil || !parsed.Valid {
		t.Fatalf("access token does not verify against the JWKS: %v", err)
	}
	return claims
}
