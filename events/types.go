package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// CodeState is a state of a device code. The only transitions are
//
//	pending  -> approved -> issued -> redeemed
//	pending  -> denied
//
// and each one is a compare-and-set on the record's KV revision. Expiry is
// not a state: it is read from ExpiresAt, so no writer has to run at the
// moment a code expires.
type CodeState string

const (
	StatePending  CodeState = "pending"
	StateApproved CodeState = "approved"
	StateDenied   CodeState = "denied"
	StateIssued   CodeState = "issued"
	StateRedeemed CodeState = "redeemed"
)

// CodeRecord is the value stored in BucketCodes under a CodeID.
type CodeRecord struct {
	State    CodeState `json:"state"`
	ClientID string    `json:"client_id"`
	Scopes   []string  `json:"scopes"`

	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`

	// IntervalSeconds is the minimum time between the starts of two polls.
	// It grows by five seconds on each slow_down (RFC 8628 section 3.5), and
	// every edge reads it from here.
	IntervalSeconds int `json:"interval_seconds"`
	// LastPollAt is the start of the last poll that did not get slow_down. It is zero until the first poll.
	LastPollAt time.Time `json:"last_poll_at,omitzero"`

	// DeviceKind is a short description of the requesting device, derived
	// from its User-Agent, for the consent page.
	DeviceKind string `json:"device_kind,omitempty"`
	// RequestedFrom is the network of the requesting address (a /24 for
	// IPv4, a /48 for IPv6), never the address itself.
	RequestedFrom string `json:"requested_from,omitempty"`

	// SealKey is the X25519 public key derived from the device code. The
	// issuer seals the token response to it, so only a holder of the device
	// code can open SealedToken.
	SealKey []byte `json:"seal_key"`

	AccountID string    `json:"account_id,omitempty"`
	Username  string    `json:"username,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`

	GrantID string `json:"grant_id,omitempty"`
	// AccessTokenID is the jti of the access token and RefreshTokenID the
	// keyed hash of the refresh token in SealedToken. The issuer writes the
	// grant from them after it stored this record, so the grant always
	// names the tokens the device received.
	AccessTokenID  string `json:"access_token_id,omitempty"`
	RefreshTokenID string `json:"refresh_token_id,omitempty"`
	// SealedToken stays after redemption, so the same device can collect a
	// response it lost in transit within the edge's replay window.
	SealedToken []byte    `json:"sealed_token,omitempty"`
	IssuedAt    time.Time `json:"issued_at,omitzero"`
	RedeemedAt  time.Time `json:"redeemed_at,omitzero"`
}

// CodeRequested is published on SubjectCodeRequested.
type CodeRequested struct {
	CodeID      string    `json:"code_id"`
	ClientID    string    `json:"client_id"`
	Scopes      []string  `json:"scopes"`
	RequestedAt time.Time `json:"requested_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// Decision is published on SubjectDecision. The account comes from the
// person's session on the edge, never from a form field.
type Decision struct {
	CodeID    string    `json:"code_id"`
	Approved  bool      `json:"approved"`
	AccountID string    `json:"account_id"`
	Username  string    `json:"username"`
	DecidedAt time.Time `json:"decided_at"`
}

// GrantApproved is published on SubjectGrantApproved. The issuer treats it
// as a hint and mints from the code record it reads, not from the event.
type GrantApproved struct {
	CodeID     string    `json:"code_id"`
	ClientID   string    `json:"client_id"`
	AccountID  string    `json:"account_id"`
	ApprovedAt time.Time `json:"approved_at"`
}

// Client is the value stored in BucketClients under its client_id.
type Client struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Public clients cannot keep a secret and do not authenticate.
	Public bool `json:"public"`
	// SecretHash is a bcrypt hash of the secret of a confidential client.
	SecretHash string   `json:"secret_hash,omitempty"`
	Scopes     []string `json:"scopes"`
	Grants     []string `json:"grants"`
	// CodeLifetimeSeconds and IntervalSeconds override the edge defaults
	// when they are positive.
	CodeLifetimeSeconds int  `json:"code_lifetime_seconds,omitempty"`
	IntervalSeconds     int  `json:"interval_seconds,omitempty"`
	DeviceFlowDisabled  bool `json:"device_flow_disabled,omitempty"`
	// AllowedOrigins are the web origins (scheme://host[:port]) from which
	// browser apps of this client may call the device authorization and
	// token endpoints (CORS).
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
}

// Account is the value stored in BucketAccounts.
type Account struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	// PasswordHash is a bcrypt hash.
	PasswordHash string `json:"password_hash"`
}

// Session is the value stored in BucketSessions for a signed-in browser.
type Session struct {
	AccountID string    `json:"account_id"`
	Username  string    `json:"username"`
	CreatedAt time.Time `json:"created_at"`
}

// Grant is the value stored in BucketGrants: what a person allowed one
// client, and the tokens minted for it.
type Grant struct {
	ID        string `json:"id"`
	CodeID    string `json:"code_id"`
	ClientID  string `json:"client_id"`
	AccountID string `json:"account_id"`
	// Username is the approving person's username when the grant was made,
	// for the preferred_username claim of refreshed access tokens.
	Username       string    `json:"username,omitempty"`
	Scopes         []string  `json:"scopes"`
	CreatedAt      time.Time `json:"created_at"`
	AccessTokenID  string    `json:"access_token_id"`
	RefreshTokenID string    `json:"refresh_token_id,omitempty"`
	// LastUsedAt is the last time the grant's refresh token was used.
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// RevokedAt is set once, when the person or the client revokes the
	// grant. A revoked grant's refresh tokens are rejected.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// DeviceKind is copied from the code at issue time, for the list of a
	// person's devices.
	DeviceKind string `json:"device_kind,omitempty"`
}

// GrantRevoked is published on SubjectGrantRevoked.
type GrantRevoked struct {
	GrantID   string    `json:"grant_id"`
	AccountID string    `json:"account_id"`
	ClientID  string    `json:"client_id"`
	RevokedAt time.Time `json:"revoked_at"`
	// Reason is one of the RevokeReason constants.
	Reason string `json:"reason"`
}

// Reasons for revoking a grant, the values of GrantRevoked.Reason.
const (
	// RevokeReasonUser is a revocation from the person's devices page.
	RevokeReasonUser = "user"
	// RevokeReasonClient is an RFC 7009 revocation request by the client.
	RevokeReasonClient = "client"
	// RevokeReasonReuse is a rotated refresh token presented again.
	RevokeReasonReuse = "reuse"
	// RevokeReasonReplay is a device code presented again after the edge's
	// replay window: the code may have leaked, so what it produced is
	// withdrawn (RFC 6749 section 4.1.2 asks the same of authorization
	// codes).
	RevokeReasonReplay = "replay"
)

// RefreshToken is the value stored in BucketRefreshTokens under a keyed hash
// of the token.
type RefreshToken struct {
	GrantID   string    `json:"grant_id"`
	ClientID  string    `json:"client_id"`
	AccountID string    `json:"account_id"`
	Scopes    []string  `json:"scopes"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// RotatedAt is set when the token was exchanged for a new one. A rotated
	// token that comes back is a replay, and revokes the grant.
	RotatedAt time.Time `json:"rotated_at,omitzero"`
}

// RefreshRequest is sent on SubjectRefresh by an edge that authenticated
// the client.
type RefreshRequest struct {
	RefreshTokenID string `json:"refresh_token_id"`
	ClientID       string `json:"client_id"`
	// Scopes narrows the grant's scopes for the new access token; empty
	// keeps them all.
	Scopes []string `json:"scopes,omitempty"`
}

// RefreshReply is the reply to a RefreshRequest: either the token response (RFC 6749
// section 5.1, as JSON) or an RFC 6749 error code with a safe description.
type RefreshReply struct {
	TokenResponse    []byte `json:"token_response,omitempty"`
	Error            string `json:"error,omitempty"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// RotateKeysReply is the reply to a request on SubjectRotateKeys.
type RotateKeysReply struct {
	KeyID string `json:"kid,omitempty"`
	Error string `json:"error,omitempty"`
}

// KeySet is the value stored in BucketKeys under KeySetKey: a JWKS
// (RFC 7517 section 5) of public signing keys.
type KeySet struct {
	Keys []JWK `json:"keys"`
}

// JWK is a public RSA or EC signing key (RFC 7517 section 4, RFC 7518
// section 6).
type JWK struct {
	KeyType   string `json:"kty"`
	KeyID     string `json:"kid"`
	Use       string `json:"use"`
	Algorithm string `json:"alg"`
	// RSA members.
	N string `json:"n,omitempty"`
	E string `json:"e,omitempty"`
	// EC members.
	Curve string `json:"crv,omitempty"`
	X     string `json:"x,omitempty"`
	Y     string `json:"y,omitempty"`
}

// Encode returns the wire form of an event or record.
func Encode(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("events: encode %T: %w", v, err)
	}
	return data, nil
}

// Decode parses the wire form of an event or record into v.
func Decode(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("events: decode %T: %w", v, err)
	}
	return nil
}
