package edge

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/oauth"
)

// The approval API lets the service's own phone app do what the pages do:
// sign in, look up a code and post the same decision. Requests and responses
// are JSON, and the person is known by the session cookie the sign-in sets.
// Every request must have the Content-Type application/json. A page on
// another site can send that only after a CORS preflight, which the edge
// never grants. The Origin and Sec-Fetch-Site headers, when present, must
// also be the edge's own.
// Errors are rendered by oauth.WriteError, in the shape of RFC 6749
// section 5.2, with these codes besides invalid_request and server_error.
var (
	errAPILoginRequired = &oauth.Error{Code: "login_required", Status: http.StatusUnauthorized, Description: "Sign in first."}
	errAPIBadSignIn     = &oauth.Error{Code: "invalid_credentials", Status: http.StatusUnauthorized, Description: "The username or password is wrong."}
	errAPICrossSite     = &oauth.Error{Code: "invalid_request", Status: http.StatusForbidden, Description: "Cross-site requests are not allowed."}
	errAPIUnknownCode   = &oauth.Error{Code: "unknown_code", Status: http.StatusNotFound, Description: "There is no code like that. Check the code on the TV."}
	errAPIExpiredCode   = &oauth.Error{Code: "expired_code", Status: http.StatusGone, Description: "The code has expired or was already used. Start again on the TV."}
	errAPIDisabled      = &oauth.Error{Code: "client_disabled", Status: http.StatusForbidden, Description: "This app cannot be connected to accounts at the moment."}
	errAPIRateLimited   = &oauth.Error{Code: "rate_limited", Status: http.StatusTooManyRequests, Description: "Too many wrong codes or failed sign-ins. Wait for the time in Retry-After."}
)

// maxAPIBodyBytes bounds the body of an approval API request.
const maxAPIBodyBytes = 8 << 10

// readAPIRequest decodes a JSON body into v after the cross-site checks.
// Unknown fields are rejected, so a misspelt field fails loudly.
func (e *Edge) readAPIRequest(w http.ResponseWriter, r *http.Request, v any) error {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/json" {
		return oauth.ErrInvalidRequest.WithDescription("Content-Type must be application/json.").WithStatus(http.StatusUnsupportedMediaType)
	}
	if !e.originAllowed(r) {
		return errAPICrossSite
	}

	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return oauth.ErrInvalidRequest.WithDescription("The request body is larger than %d bytes.", maxAPIBodyBytes).WithStatus(http.StatusRequestEntityTooLarge)
		}
		return oauth.ErrInvalidRequest.WithDescription("The request body is not the expected JSON object: %s.", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return oauth.ErrInvalidRequest.WithDescription("The request body has data after the JSON object.")
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return "invalid JSON"
	case errors.As(err, &typeErr):
		return "field " + typeErr.Field + " has the wrong type"
	case errors.Is(err, io.EOF):
		return "the body is empty"
	default:
		// DisallowUnknownFields reports `json: unknown field "name"`.
		return err.Error()
	}
}

// apiSignInRequest is the body of POST /api/device/session.
type apiSignInRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// apiSignIn signs a person in and sets the session cookie, under the same
// limits on failed sign-ins as the sign-in page.
func (e *Edge) apiSignIn(w http.ResponseWriter, r *http.Request) error {
	var req apiSignInRequest
	if err := e.readAPIRequest(w, r, &req); err != nil {
		return err
	}
	username := accounts.NormalizeUsername(req.Username)
	if username == "" || req.Password == "" {
		return oauth.ErrInvalidRequest.WithDescription("username and password are required.")
	}

	counters := e.signInCounters(r, username)
	wait, err := e.checkLimits(r, counters)
	if err != nil {
		return err
	}
	if wait > 0 {
		return errAPIRateLimited.WithRetryAfter(wait)
	}
	account, err := e.accounts.Verify(r.Context(), username, req.Password)
	if errors.Is(err, accounts.ErrInvalidCredentials) {
		if err := e.limiter.fail(r.Context(), counters...); err != nil {
			return err
		}
		return errAPIBadSignIn
	}
	if err != nil {
		return err
	}

	if err := e.startSession(r.Context(), w, r, account); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Str("account_id", account.ID).Msg("signed in through the approval API")
	oauth.WriteJSON(w, http.StatusOK, map[string]string{"username": account.Username})
	return nil
}

// apiCodeRequest is the body of POST /api/device/lookup and, with Decision,
// of POST /api/device/decision.
type apiCodeRequest struct {
	UserCode string `json:"user_code"`
	// Decision is "approve" or "deny".
	Decision string `json:"decision,omitempty"`
}

// apiScope is a requested scope and what it lets the device do.
type apiScope struct {
	Scope       string `json:"scope"`
	Description string `json:"description"`
}

// apiCodeDetails is the request a code stands for, shown by the app before
// the person decides: the same facts as the consent page.
type apiCodeDetails struct {
	UserCode      string     `json:"user_code"`
	ClientID      string     `json:"client_id"`
	ClientName    string     `json:"client_name"`
	DeviceKind    string     `json:"device_kind"`
	Scopes        []apiScope `json:"scopes"`
	RequestedAt   time.Time  `json:"requested_at"`
	RequestedFrom string     `json:"requested_from,omitempty"`
	ExpiresAt     time.Time  `json:"expires_at"`
}

// apiDecisionResponse confirms a posted decision.
type apiDecisionResponse struct {
	UserCode   string `json:"user_code"`
	Decision   string `json:"decision"`
	ClientName string `json:"client_name"`
}

// apiFindCode authenticates the person and finds the pending code of a
// request, under the same limits on wrong codes as the pages.
func (e *Edge) apiFindCode(r *http.Request, req apiCodeRequest) (events.Session, string, foundCode, error) {
	session, signedIn, err := e.currentSession(r.Context(), r)
	if err != nil {
		return events.Session{}, "", foundCode{}, err
	}
	if !signedIn {
		return events.Session{}, "", foundCode{}, errAPILoginRequired
	}
	userCode, err := codes.NormalizeUserCode(req.UserCode)
	if err != nil {
		return events.Session{}, "", foundCode{}, oauth.ErrInvalidRequest.WithDescription("user_code is missing or is not a user code such as BCDF-GHJK.")
	}

	found, err := e.findCode(r, userCode)
	if err != nil {
		return events.Session{}, "", foundCode{}, err
	}
	switch found.problem {
	case codeLimited:
		return events.Session{}, "", foundCode{}, errAPIRateLimited.WithRetryAfter(found.retryAfter)
	case codeUnknown:
		return events.Session{}, "", foundCode{}, errAPIUnknownCode
	case codeExpired:
		return events.Session{}, "", foundCode{}, errAPIExpiredCode
	case codeDisabled:
		return events.Session{}, "", foundCode{}, errAPIDisabled
	}
	return session, userCode, found, nil
}

// apiLookup returns the details of a pending code for the app's consent
// screen.
// Descriptions follow Accept-Language like the pages.
func (e *Edge) apiLookup(w http.ResponseWriter, r *http.Request) error {
	var req apiCodeRequest
	if err := e.readAPIRequest(w, r, &req); err != nil {
		return err
	}
	if req.Decision != "" {
		return oauth.ErrInvalidRequest.WithDescription("decision belongs in a request to the decision endpoint.")
	}
	_, userCode, found, err := e.apiFindCode(r, req)
	if err != nil {
		return err
	}

	l := e.localizer(r)
	details := apiCodeDetails{
		UserCode:      codes.FormatUserCode(userCode),
		ClientID:      found.record.ClientID,
		ClientName:    clientName(found.client, found.record.ClientID),
		DeviceKind:    l.DeviceKind(found.record.DeviceKind),
		Scopes:        []apiScope{},
		RequestedAt:   found.record.CreatedAt.UTC(),
		RequestedFrom: found.record.RequestedFrom,
		ExpiresAt:     found.record.ExpiresAt.UTC(),
	}
	for _, s := range found.record.Scopes {
		details.Scopes = append(details.Scopes, apiScope{Scope: s, Description: l.Scope(s)})
	}
	w.Header().Set("Content-Language", l.Lang())
	oauth.WriteJSON(w, http.StatusOK, details)
	return nil
}

// apiDecision publishes the person's decision, the same event the consent
// page publishes.
func (e *Edge) apiDecision(w http.ResponseWriter, r *http.Request) error {
	var req apiCodeRequest
	if err := e.readAPIRequest(w, r, &req); err != nil {
		return err
	}
	var approved bool
	switch req.Decision {
	case "approve":
		approved = true
	case "deny":
	default:
		return oauth.ErrInvalidRequest.WithDescription(`decision must be "approve" or "deny".`)
	}
	session, userCode, found, err := e.apiFindCode(r, req)
	if err != nil {
		return err
	}

	if err := e.publishDecision(r, found, session, approved); err != nil {
		return err
	}
	oauth.WriteJSON(w, http.StatusOK, apiDecisionResponse{
		UserCode:   codes.FormatUserCode(userCode),
		Decision:   req.Decision,
		ClientName: clientName(found.client, found.record.ClientID),
	})
	return nil
}
