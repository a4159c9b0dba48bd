package accesstoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamco/deviceauth/events"
)

const testIssuer = "https://auth.example"

var testKey = func() *rsa.PrivateKey {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return key
}()

func rsaJWK(kid string, key *rsa.PublicKey) events.JWK {
	b64 := base64.RawURLEncoding.EncodeToString
	return events.JWK{KeyType: "RSA", KeyID: kid, Use: "sig", Algorithm: "RS256", N: b64(key.N.Bytes()), E: b64(big.NewInt(int64(key.E)).Bytes())}
}

func sign(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	token := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		token.Header[k] = v
	}
	signed, err := token.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return signed
}

func validClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": testIssuer, "sub": "acct_1", "aud": "streaming-api", "client_id": "tv-app",
		"scope": "profile", "jti": "j1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

func newTestVerifier(t testing.TB) *Verifier {
	t.Helper()
	v := NewVerifier(testIssuer, nil)
	if err := v.SetKeys(events.KeySet{Keys: []events.JWK{rsaJWK("k1", &testKey.PublicKey)}}); err != nil {
		t.Fatalf("SetKeys: %v", err)
	}
	return v
}

func TestVerify(t *testing.T) {
	v := newTestVerifier(t)
	atHeader := map[string]any{"kid": "k1", "typ": "at+jwt"}

	claims, err := v.Verify(sign(t, jwt.SigningMethodRS256, testKey, atHeader, validClaims()))
	if err != nil {
		t.Fatalf("valid token rejected: %v", err)
	}
	if claims.Subject != "acct_1" || claims.ClientID != "tv-app" || claims.Scope != "profile" || claims.JTI != "j1" {
		t.Errorf("claims %+v", claims)
	}

	expired := validClaims()
	expired["exp"] = time.Now().Add(-time.Minute).Unix()
	otherIssuer := validClaims()
	otherIssuer["iss"] = "https://evil.example"
	noExp := validClaims()
	delete(noExp, "exp")
	noClient := validClaims()
	delete(noClient, "client_id")
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	publicKeyAsHMACSecret := testKey.PublicKey.N.Bytes()

	cases := map[string]string{
		"expired":                         sign(t, jwt.SigningMethodRS256, testKey, atHeader, expired),
		"another issuer":                  sign(t, jwt.SigningMethodRS256, testKey, atHeader, otherIssuer),
		"no expiry":                       sign(t, jwt.SigningMethodRS256, testKey, atHeader, noExp),
		"no client_id":                    sign(t, jwt.SigningMethodRS256, testKey, atHeader, noClient),
		"wrong typ":                       sign(t, jwt.SigningMethodRS256, testKey, map[string]any{"kid": "k1", "typ": "JWT"}, validClaims()),
		"unknown kid":                     sign(t, jwt.SigningMethodRS256, testKey, map[string]any{"kid": "k2", "typ": "at+jwt"}, validClaims()),
		"signed by another key":           sign(t, jwt.SigningMethodRS256, otherKey, atHeader, validClaims()),
		"ES256 under an RSA kid":          sign(t, jwt.SigningMethodES256, ecKey, atHeader, validClaims()),
		"HS256 keyed with the public key": sign(t, jwt.SigningMethodHS256, publicKeyAsHMACSecret, atHeader, validClaims()),
		"PS256 with the right key":        sign(t, jwt.SigningMethodPS256, testKey, atHeader, validClaims()),
		"alg none":                        sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, atHeader, validClaims()),
		"not a JWT":                       "abc",
		"too long":                        strings.Repeat("a.", 5000),
	}
	for name, token := range cases {
		if _, err := v.Verify(token); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
		}
	}
}

func TestSetKeysSkipsUnusableKeys(t *testing.T) {
	v := NewVerifier(testIssuer, nil)
	err := v.SetKeys(events.KeySet{Keys: []events.JWK{
		rsaJWK("good", &testKey.PublicKey),
		{KeyType: "oct", KeyID: "hmac", Algorithm: "HS256"},
		{KeyType: "RSA", KeyID: "short", Algorithm: "RS256", N: "AQAB", E: "AQAB"},
	}})
	if err == nil {
		t.Error("SetKeys reported no problem with unusable keys")
	}
	token := sign(t, jwt.SigningMethodRS256, testKey, map[string]any{"kid": "good", "typ": "at+jwt"}, validClaims())
	if _, err := v.Verify(token); err != nil {
		t.Errorf("the usable key was dropped: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	v := newTestVerifier(f)
	valid := sign(f, jwt.SigningMethodRS256, testKey, map[string]any{"kid": "k1", "typ": "at+jwt"}, validClaims())
	f.Add(valid)
	f.Add(valid[:len(valid)-2])
	f.Add("e30.e30.")
	f.Add("..")

	f.Fuzz(func(t *testing.T, token string) {
		_, err := v.Verify(token)
		if err == nil && token != valid {
			// RS256 signatures are deterministic, so no other string may
			// verify unless it decodes to the same bytes.
			parts := strings.Split(token, ".")
			validParts := strings.Split(valid, ".")
			for i := range parts {
				a, _ := base64.RawURLEncoding.DecodeString(parts[i])
				b, _ := base64.RawURLEncoding.DecodeString(validParts[i])
				if string(a) != string(b) {
					t.Fatalf("a token other than the signed one verified: %q", token)
				}
			}
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
	})
}
