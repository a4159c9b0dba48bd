// Package events is the wire contract between the edge, the approver and the
// issuer: the names of streams, subjects, durable consumers and KV buckets,
// the types of the events and records stored there, and their encoding.
//
// It imports only the standard library. Every key and subject token that
// names a device code is a keyed hash of the code (see CodeID), never the code
// itself, because device codes are bearer secrets.
package events

// Stream names.
const (
	// StreamDevice stores every device-flow event for a day. It is an audit
	// trail as well as the queue the approver and the issuer consume.
	StreamDevice = "DEVICE"
)

// Subject prefixes. The last token of each subject is a CodeID.
const (
	// SubjectCodeRequested carries CodeRequested, published by the edge once
	// the code record exists in BucketCodes.
	SubjectCodeRequested = "device.requested"
	// SubjectDecision carries Decision, published by the edge when a person
	// approves or denies on the phone.
	SubjectDecision = "device.decided"
	// SubjectGrantApproved carries GrantApproved, published by the approver
	// once the code record is in StateApproved.
	SubjectGrantApproved = "device.approved"

	// SubjectGrantRevoked carries GrantRevoked, published by the edge after
	// it marked a grant revoked. The last token is the grant id.
	SubjectGrantRevoked = "device.revoked"

	// SubjectDeadLetter carries events a worker can never process, with the
	// reason in the DeadLetterReasonHeader header, followed by the name of the
	// consumer that gave up.
	SubjectDeadLetter = "device.dead"

	// SubjectAll matches every subject stored in StreamDevice.
	SubjectAll = "device.>"
)

// Request subjects the issuers serve over core NATS request-reply, in the
// queue group QueueIssuers, because only an issuer can sign.
const (
	// SubjectRefresh carries RefreshRequest; the reply is RefreshReply.
	SubjectRefresh = "issuer.refresh"
	// SubjectRotateKeys requests every issuer (no queue group) to start signing
	// with a new key. The reply is RotateKeysReply.
	SubjectRotateKeys = "issuer.rotate_keys"

	QueueIssuers = "issuers"
)

// Durable consumer names. They are fixed strings so that a renamed Go
// identifier never orphans a consumer and its unacknowledged messages.
const (
	ConsumerApprover = "approver"
	ConsumerIssuer   = "issuer"
)

// DeadLetterReasonHeader and DeadLetterSubjectHeader are set on a message
// published to SubjectDeadLetter: why it was given up, and the subject it
// was first published on.
const (
	DeadLetterReasonHeader  = "Deviceauth-Dead-Reason"
	DeadLetterSubjectHeader = "Deviceauth-Dead-Subject"
)

// KV bucket names.
const (
	// BucketCodes maps a CodeID to its CodeRecord.
	BucketCodes = "device_codes"
	// BucketUserCodes maps a UserCodeID to the CodeID it belongs to.
	BucketUserCodes = "user_codes"
	// BucketClients maps a client_id to its Client.
	BucketClients = "clients"
	// BucketAccounts maps a normalised username to its Account.
	BucketAccounts = "accounts"
	// BucketSessions maps a keyed hash of a browser session id to a Session.
	BucketSessions = "sessions"
	// BucketGrants maps GrantKey(account id, grant id) to a Grant, so the
	// grants of one account can be listed with the key filter
	// "<account id>.>".
	BucketGrants = "grants"
	// BucketRefreshTokens maps a keyed hash of a refresh token to a
	// RefreshToken.
	BucketRefreshTokens = "refresh_tokens"
	// BucketKeys holds the issuer's public keys under KeySetKey.
	BucketKeys = "signing_keys"
	// BucketRateLimits maps "<limit>.<keyed hash of the subject>.<window
	// start in Unix seconds>" to the number of failures counted in that
	// window, an integer. Every edge counts in the same keys, so a limit
	// holds across edges.
	BucketRateLimits = "rate_limits"
)

// KeySetKey is the key in BucketKeys whose value is the JWKS (RFC 7517) of
// every public key whose tokens may still be in use.
const KeySetKey = "jwks"

// GrantKey returns the key of a grant in BucketGrants.
func GrantKey(accountID, grantID string) string {
	return accountID + "." + grantID
}

// Subject returns the subject of an event about one code.
func Subject(prefix, codeID string) string {
	return prefix + "." + codeID
}

// CodeChangedSubject returns the subject of every write to the code's record
// in BucketCodes. A KV put is an ordinary publish to "$KV.<bucket>.<key>",
// so a core NATS subscription to this subject receives each new record
// without reading the bucket. That is how a held poll waits. Two caveats
// apply: the message can arrive before the stream has stored the write, and
// writes the stream rejects (a lost compare-and-set) are delivered too, so a
// subscriber must treat the message as a hint and read the bucket.
func CodeChangedSubject(codeID string) string {
	return "$KV." + BucketCodes + "." + codeID
}
