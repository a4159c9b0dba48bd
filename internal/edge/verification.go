package edge

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/kv"
)

// maxPageFormBytes bounds the body of a form posted from a page.
const maxPageFormBytes = 8 << 10

// Messages shown on the pages.
const (
	msgBadCode     = "That code isn't valid. Check the code on your TV and try again."
	msgExpiredCode = "That code has expired or was already used. Start again on your TV to get a new code."
	msgFormExpired = "This form has expired. Please try again."
	msgBadSignIn   = "The username or password is wrong."
	msgNoCodeYet   = "Enter the code shown on your TV."
	msgBadDecision = "Choose Allow or Deny."
	titleEnterCode = "Connect a device"
	titleConfirm   = "Is this your code?"
	titleSignIn    = "Sign in"
	titleConsent   = "Allow this device?"
	titleApproved  = "Device connected"
	titleDenied    = "Request denied"
	titleExpired   = "Code expired"
)

// codeProblem says why a user code cannot be approved.
type codeProblem int

const (
	codeOK codeProblem = iota
	codeUnknown
	codeExpired
)

// lookupUserCode finds the pending code a canonical user code belongs to.
func (e *Edge) lookupUserCode(ctx context.Context, userCode string) (string, events.CodeRecord, codeProblem, error) {
	codeID, _, err := e.userCodes.Get(ctx, e.hasher.UserCodeID(userCode))
	if errors.Is(err, kv.ErrNotFound) {
		return "", events.CodeRecord{}, codeUnknown, nil
	}
	if err != nil {
		return "", events.CodeRecord{}, 0, err
	}

	rec, _, err := e.codes.Get(ctx, codeID)
	if errors.Is(err, kv.ErrNotFound) {
		return "", events.CodeRecord{}, codeExpired, nil
	}
	if err != nil {
		return "", events.CodeRecord{}, 0, err
	}
	if rec.State != events.StatePending || !e.cfg.Now().Before(rec.ExpiresAt) {
		return codeID, rec, codeExpired, nil
	}
	return codeID, rec, codeOK, nil
}

// enterCodePage shows the code form, or, for a code pre-filled from the
// verification_uri_complete link, asks the person to confirm that it is the
// code on their TV. A scanned link never approves anything by itself.
func (e *Edge) enterCodePage(w http.ResponseWriter, r *http.Request) error {
	data := pageData{Title: titleEnterCode, CSRFToken: e.csrfToken(w, r)}

	raw := r.URL.Query().Get("user_code")
	if raw == "" {
		e.render(w, r, http.StatusOK, "enter_code", data)
		return nil
	}
	userCode, err := codes.NormalizeUserCode(raw)
	if err != nil {
		data.Error = msgBadCode
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	}

	data.Title = titleConfirm
	data.UserCode = codes.FormatUserCode(userCode)
	e.render(w, r, http.StatusOK, "confirm_code", data)
	return nil
}

// submitCode checks a typed or confirmed code and moves on to consent.
func (e *Edge) submitCode(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	data := pageData{Title: titleEnterCode, CSRFToken: e.csrfToken(w, r)}
	if !e.validCSRF(r) {
		data.Error = msgFormExpired
		e.render(w, r, http.StatusForbidden, "enter_code", data)
		return nil
	}

	raw := r.PostFormValue("user_code")
	if raw == "" {
		data.Error = msgNoCodeYet
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	}
	userCode, err := codes.NormalizeUserCode(raw)
	if err != nil {
		data.Error = msgBadCode
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	}

	_, _, problem, err := e.lookupUserCode(r.Context(), userCode)
	if err != nil {
		return err
	}
	switch problem {
	case codeUnknown:
		zerolog.Ctx(r.Context()).Debug().Msg("unknown user code entered")
		data.Error = msgBadCode
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	case codeExpired:
		data.Error = msgExpiredCode
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	}

	http.Redirect(w, r, consentPath(userCode), http.StatusSeeOther)
	return nil
}

// consentPath is the only redirect target of the pages: a fixed path with a
// canonical user code, so no request can steer a redirect elsewhere.
func consentPath(userCode string) string {
	return PathConsent + "?user_code=" + url.QueryEscape(codes.FormatUserCode(userCode))
}

// consentPage shows what the device asks for, after sign-in.
func (e *Edge) consentPage(w http.ResponseWriter, r *http.Request) error {
	userCode, err := codes.NormalizeUserCode(r.URL.Query().Get("user_code"))
	if err != nil {
		http.Redirect(w, r, PathDevice, http.StatusSeeOther)
		return nil
	}
	return e.showConsent(w, r, userCode, "")
}

func (e *Edge) showConsent(w http.ResponseWriter, r *http.Request, userCode, problem string) error {
	data := pageData{
		CSRFToken: e.csrfToken(w, r),
		UserCode:  codes.FormatUserCode(userCode),
		Error:     problem,
	}

	session, signedIn, err := e.currentSession(r.Context(), r)
	if err != nil {
		return err
	}
	if !signedIn {
		data.Title = titleSignIn
		e.render(w, r, http.StatusOK, "signin", data)
		return nil
	}

	_, rec, codeState, err := e.lookupUserCode(r.Context(), userCode)
	if err != nil {
		return err
	}
	if codeState != codeOK {
		data.Title = titleExpired
		data.Outcome = "expired"
		e.render(w, r, http.StatusGone, "result", data)
		return nil
	}

	client, _ := e.clients.Lookup(rec.ClientID)
	data.Title = titleConsent
	data.Username = session.Username
	data.ClientName = client.Name
	if data.ClientName == "" {
		data.ClientName = rec.ClientID
	}
	data.DeviceKind = rec.DeviceKind
	data.Scopes = describeScopes(rec.Scopes)
	data.RequestedAt = rec.CreatedAt
	data.RequestedFrom = rec.RequestedFrom
	e.render(w, r, http.StatusOK, "consent", data)
	return nil
}

// signIn checks a username and password and returns to the consent page.
func (e *Edge) signIn(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	userCode, codeErr := codes.NormalizeUserCode(r.PostFormValue("user_code"))
	data := pageData{Title: titleSignIn, CSRFToken: e.csrfToken(w, r)}
	if codeErr == nil {
		data.UserCode = codes.FormatUserCode(userCode)
	}

	if !e.validCSRF(r) {
		data.Error = msgFormExpired
		e.render(w, r, http.StatusForbidden, "signin", data)
		return nil
	}

	account, err := e.accounts.Verify(r.Context(), r.PostFormValue("username"), r.PostFormValue("password"))
	if errors.Is(err, accounts.ErrInvalidCredentials) {
		zerolog.Ctx(r.Context()).Debug().Msg("sign-in failed")
		data.Error = msgBadSignIn
		e.render(w, r, http.StatusUnauthorized, "signin", data)
		return nil
	}
	if err != nil {
		return err
	}

	if err := e.startSession(r.Context(), w, account); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Str("account_id", account.ID).Msg("signed in")

	if codeErr != nil {
		http.Redirect(w, r, PathDevice, http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, consentPath(userCode), http.StatusSeeOther)
	return nil
}

// submitDecision publishes the person's approval or denial. The account is
// the session's, never a form field.
func (e *Edge) submitDecision(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	userCode, err := codes.NormalizeUserCode(r.PostFormValue("user_code"))
	if err != nil {
		http.Redirect(w, r, PathDevice, http.StatusSeeOther)
		return nil
	}
	if !e.validCSRF(r) {
		return e.showConsent(w, r, userCode, msgFormExpired)
	}

	session, signedIn, err := e.currentSession(r.Context(), r)
	if err != nil {
		return err
	}
	if !signedIn {
		return e.showConsent(w, r, userCode, "")
	}

	var approved bool
	switch r.PostFormValue("decision") {
	case "approve":
		approved = true
	case "deny":
	default:
		return e.showConsent(w, r, userCode, msgBadDecision)
	}

	codeID, rec, problem, err := e.lookupUserCode(r.Context(), userCode)
	if err != nil {
		return err
	}
	data := pageData{UserCode: codes.FormatUserCode(userCode)}
	if problem != codeOK {
		data.Title = titleExpired
		data.Outcome = "expired"
		e.render(w, r, http.StatusGone, "result", data)
		return nil
	}

	payload, err := events.Encode(events.Decision{
		CodeID:    codeID,
		Approved:  approved,
		AccountID: session.AccountID,
		Username:  session.Username,
		DecidedAt: e.cfg.Now(),
	})
	if err != nil {
		return err
	}
	if _, err := e.js.Publish(r.Context(), events.Subject(events.SubjectDecision, codeID), payload); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Str("account_id", session.AccountID).Str("client_id", rec.ClientID).
		Str("code_id", codeID[:12]).Bool("approved", approved).Msg("decision submitted")

	client, _ := e.clients.Lookup(rec.ClientID)
	data.ClientName = client.Name
	data.DeviceKind = rec.DeviceKind
	if approved {
		data.Title = titleApproved
		data.Outcome = "approved"
	} else {
		data.Title = titleDenied
		data.Outcome = "denied"
	}
	e.render(w, r, http.StatusOK, "result", data)
	return nil
}
