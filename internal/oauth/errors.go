// Package oauth holds the OAuth 2.0 wire types the edge and the issuer share:
// the error type every OAuth endpoint returns and the one function that
// renders it (RFC 6749 section 5.2), and the token response (section 5.1).
package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Error codes from RFC 6749 section 5.2 and RFC 8628 section 3.5.
const (
	CodeInvalidRequest       = "invalid_request"
	CodeInvalidClient        = "invalid_client"
	CodeInvalidGrant         = "invalid_grant"
	CodeUnauthorizedClient   = "unauthorized_client"
	CodeUnsupportedGrantType = "unsupported_grant_type"
	CodeInvalidScope         = "invalid_scope"
	CodeServerError          = "server_error"
	CodeAuthorizationPending = "authorization_pending"
	CodeSlowDown             = "slow_down"
	CodeAccessDenied         = "access_denied"
	CodeExpiredToken         = "expired_token"
	CodeUnsupportedTokenType = "unsupported_token_type"
)

// Error is an error a client may see. Description is safe to send; Cause is
// logged and never sent.
type Error struct {
	Code        string
	Description string
	Status      int
	Cause       error
	// Challenge is sent as WWW-Authenticate with a 401.
	Challenge string
	// RetryAfter, when positive, is sent as Retry-After in whole seconds,
	// rounded up (RFC 9110 section 10.2.3).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Description, e.Cause)
	}
	return e.Code + ": " + e.Description
}

func (e *Error) Unwrap() error { return e.Cause }

// WithCause returns a copy of e that records cause for the log.
func (e *Error) WithCause(cause error) *Error {
	c := *e
	c.Cause = cause
	return &c
}

// WithDescription returns a copy of e with another description.
func (e *Error) WithDescription(format string, args ...any) *Error {
	c := *e
	c.Description = fmt.Sprintf(format, args...)
	return &c
}

// WithStatus returns a copy of e sent with another HTTP status.
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

// WithRetryAfter returns a copy of e that tells the client how long to wait
// before it tries again.
func (e *Error) WithRetryAfter(wait time.Duration) *Error {
	c := *e
	c.RetryAfter = wait
	return &c
}

// Errors with their default status and description. Use WithDescription
// and WithCause to specialise them.
var (
	ErrInvalidRequest       = &Error{Code: CodeInvalidRequest, Status: http.StatusBadRequest, Description: "The request is malformed."}
	ErrInvalidClient        = &Error{Code: CodeInvalidClient, Status: http.StatusUnauthorized, Description: "Client authentication failed.", Challenge: `Basic realm="oauth"`}
	ErrInvalidGrant         = &Error{Code: CodeInvalidGrant, Status: http.StatusBadRequest, Description: "The grant is invalid, expired or already used."}
	ErrUnauthorizedClient   = &Error{Code: CodeUnauthorizedClient, Status: http.StatusBadRequest, Description: "The client may not use this grant type."}
	ErrUnsupportedGrantType = &Error{Code: CodeUnsupportedGrantType, Status: http.StatusBadRequest, Description: "The grant type is not supported."}
	ErrInvalidScope         = &Error{Code: CodeInvalidScope, Status: http.StatusBadRequest, Description: "The requested scope is invalid or not allowed for this client."}
	ErrServerError          = &Error{Code: CodeServerError, Status: http.StatusInternalServerError, Description: "The server failed to process the request. Try again later."}
	ErrAuthorizationPending = &Error{Code: CodeAuthorizationPending, Status: http.StatusBadRequest, Description: "The user has not yet approved or denied the request."}
	ErrSlowDown             = &Error{Code: CodeSlowDown, Status: http.StatusBadRequest, Description: "Polling too fast. Wait the interval plus five seconds between requests."}
	ErrAccessDenied         = &Error{Code: CodeAccessDenied, Status: http.StatusBadRequest, Description: "The user denied the request."}
	ErrExpiredToken         = &Error{Code: CodeExpiredToken, Status: http.StatusBadRequest, Description: "The device code has expired. Request a new one."}
	ErrUnsupportedTokenType = &Error{Code: CodeUnsupportedTokenType, Status: http.StatusBadRequest, Description: "Revoking this type of token is not supported."}
)

// byCode lists the errors a service may return by code across NATS.
var byCode = map[string]*Error{}

func init() {
	for _, e := range []*Error{
		ErrInvalidRequest, ErrInvalidClient, ErrInvalidGrant, ErrUnauthorizedClient,
		ErrUnsupportedGrantType, ErrInvalidScope, ErrServerError, ErrAuthorizationPending,
		ErrSlowDown, ErrAccessDenied, ErrExpiredToken, ErrUnsupportedTokenType,
	} {
		byCode[e.Code] = e
	}
}

// ErrorFromCode rebuilds an error another service reported by its code and
// description. An unknown code becomes server_error.
func ErrorFromCode(code, description string) *Error {
	e, ok := byCode[code]
	if !ok {
		return ErrServerError.WithCause(fmt.Errorf("unknown error code %q from a service", code))
	}
	if description == "" {
		return e
	}
	return e.WithDescription("%s", description)
}

// AsError returns the *Error in err's chain, or ErrServerError wrapping err
// when there is none, so that an unexpected failure is never shown to a
// client as anything but server_error.
func AsError(err error) *Error {
	var oe *Error
	if errors.As(err, &oe) {
		return oe
	}
	return ErrServerError.WithCause(err)
}

type errorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// WriteError renders err as the JSON error response of RFC 6749 section 5.2.
// It is the only place in the project that writes an OAuth error.
func WriteError(w http.ResponseWriter, err error) {
	oe := AsError(err)
	h := w.Header()
	setNoStoreJSON(h)
	if oe.Status == http.StatusUnauthorized && oe.Challenge != "" {
		h.Set("WWW-Authenticate", oe.Challenge)
	}
	if oe.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((oe.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(oe.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: oe.Code, ErrorDescription: oe.Description})
}

// WriteJSON writes a successful JSON response that must not be cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	setNoStoreJSON(w.Header())
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteTokenResponse sends a token response (RFC 6749 section 5.1) that is
// already encoded as JSON, such as one the issuer sealed.
func WriteTokenResponse(w http.ResponseWriter, body []byte) {
	setNoStoreJSON(w.Header())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// setNoStoreJSON sets the headers of a JSON response that carries tokens or
// errors about them: RFC 6749 section 5.1 forbids caching it.
func setNoStoreJSON(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}
