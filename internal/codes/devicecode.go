package codes

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// deviceCodeBytes is the entropy of a device code: 256 bits.
const deviceCodeBytes = 32

// MinKeyBytes is the minimum length of the key given to NewHasher.
const MinKeyBytes = 32

// NewDeviceCode returns a random device code, URL-safe base64 without
// padding.
func NewDeviceCode(random io.Reader) (string, error) {
	if random == nil {
		random = rand.Reader
	}
	buf := make([]byte, deviceCodeBytes)
	if _, err := io.ReadFull(random, buf); err != nil {
		return "", fmt.Errorf("codes: read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

// Hasher derives storage keys from secrets with HMAC-SHA256. Every edge must
// use the same key, or codes created on one edge are unknown to the others.
type Hasher struct {
	key []byte
}

// NewHasher returns a Hasher keyed with key, which must be at least
// MinKeyBytes long.
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("codes: hash key has %d bytes, want at least %d", len(key), MinKeyBytes)
	}
	return &Hasher{key: append([]byte(nil), key...)}, nil
}

// The purpose labels keep a hash of one kind of secret from ever equalling
// the hash of another kind with the same text.
const (
	purposeDeviceCode   = "device-code\x00"
	purposeUserCode     = "user-code\x00"
	purposeSession      = "session\x00"
	purposeRefreshToken = "refresh-token\x00"
	purposeCSRF         = "csrf\x00"
	purposeRateLimit    = "rate-limit\x00"
	purposeConfirmation = "confirmation\x00"
)

func (h *Hasher) sum(purpose, secret string) string {
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(purpose))
	mac.Write([]byte(secret))
	return hex.EncodeToString(mac.Sum(nil))
}

// CodeID returns the id of a device code: the key of its record and the last
// token of its subjects.
func (h *Hasher) CodeID(deviceCode string) string { return h.sum(purposeDeviceCode, deviceCode) }

// UserCodeID returns the storage key of a canonical user code.
func (h *Hasher) UserCodeID(userCode string) string { return h.sum(purposeUserCode, userCode) }

// SessionID returns the storage key of a browser session id.
func (h *Hasher) SessionID(sessionID string) string { return h.sum(purposeSession, sessionID) }

// RefreshTokenID returns the storage key of a refresh token.
func (h *Hasher) RefreshTokenID(token string) string { return h.sum(purposeRefreshToken, token) }

// RateLimitID returns the storage key part for the subject of a rate limit,
// such as an address, a username or a browser's cookie, so counters name no
// person and no secret.
func (h *Hasher) RateLimitID(subject string) string { return h.sum(purposeRateLimit, subject)[:32] }

// ConfirmationToken returns the proof that the browser with a CSRF cookie
// value confirmed a canonical user code, for the address of its consent page.
func (h *Hasher) ConfirmationToken(cookie, userCode string) string {
	return h.sum(purposeConfirmation, cookie+"\x00"+userCode)
}

// CSRFToken returns the form token that matches a CSRF cookie value.
func (h *Hasher) CSRFToken(cookie string) string { return h.sum(purposeCSRF, cookie) }

// ValidCSRFToken reports whether token was made by CSRFToken from cookie, in
// constant time.
func (h *Hasher) ValidCSRFToken(cookie, token string) bool {
	if cookie == "" || token == "" {
		return false
	}
	return hmac.Equal([]byte(h.CSRFToken(cookie)), []byte(token))
}

// ErrMalformedDeviceCode is returned for a device code that this server
// cannot have issued.
var ErrMalformedDeviceCode = errors.New("codes: malformed device code")

// CheckDeviceCode rejects values that cannot be device codes before any
// storage is touched.
func CheckDeviceCode(deviceCode string) error {
	if len(deviceCode) != base64.RawURLEncoding.EncodedLen(deviceCodeBytes) {
		return ErrMalformedDeviceCode
	}
	if _, err := base64.RawURLEncoding.DecodeString(deviceCode); err != nil {
		return ErrMalformedDeviceCode
	}
	return nil
}

// LogID returns the first 12 hex digits of a code id, enough to follow one
// code through the logs without filling every line with the whole hash.
func LogID(codeID string) string {
	if len(codeID) > 12 {
		return codeID[:12]
	}
	return codeID
}
