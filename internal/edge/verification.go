package edge

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/kv"
)

// maxPageFormBytes bounds the body of a form posted from a page.
const maxPageFormBytes = 8 << 10

// codeProblem is the reason a user code cannot be approved.
type codeProblem int

const (
	codeOK codeProblem = iota
	codeUnknown
	codeExpired
	// codeDisabled means an operator switched the device flow off for the
	// code's client (events.Client.DeviceFlowDisabled), or removed it.
	codeDisabled
	// codeLimited means too many wrong codes came from this browser, this
	// address or everywhere; the code was not looked up.
	codeLimited
)

// foundCode is the result of looking up a user code for a person.
type foundCode struct {
	problem    codeProblem
	codeID     string
	record     events.CodeRecord
	client     events.Client
	retryAfter time.Duration
}

// lookupUserCode finds the pending code a canonical user code belongs to.
func (e *Edge) lookupUserCode(ctx context.Context, userCode string) (foundCode, error) {
	codeID, _, err := e.userCodes.Get(ctx, e.hasher.UserCodeID(userCode))
	if errors.Is(err, kv.ErrNotFound) {
		return foundCode{problem: codeUnknown}, nil
	}
	if err != nil {
		return foundCode{}, err
	}

	rec, _, err := e.codes.Get(ctx, codeID)
	if errors.Is(err, kv.ErrNotFound) {
		return foundCode{problem: codeExpired}, nil
	}
	if err != nil {
		return foundCode{}, err
	}
	found := foundCode{codeID: codeID, record: rec}
	if rec.State != events.StatePending || !e.cfg.Now().Before(rec.ExpiresAt) {
		found.problem = codeExpired
		return found, nil
	}
	client, ok := e.clients.Lookup(rec.ClientID)
	if !ok || client.DeviceFlowDisabled {
		found.problem = codeDisabled
		return found, nil
	}
	found.client = client
	return found, nil
}

// findCode looks up a user code on behalf of a person, under the limits on
// wrong codes. A request over a limit gets codeLimited without a lookup, and
// an unknown code counts against every limit. Expired codes do
// not count, because they were real codes and guessing them gains nothing.
func (e *Edge) findCode(r *http.Request, userCode string) (foundCode, error) {
	counters := e.codeCounters(r)
	wait, err := e.checkLimits(r, counters)
	if err != nil {
		return foundCode{}, err
	}
	if wait > 0 {
		return foundCode{problem: codeLimited, retryAfter: wait}, nil
	}

	found, err := e.lookupUserCode(r.Context(), userCode)
	if err != nil {
		return foundCode{}, err
	}
	if found.problem == codeUnknown {
		zerolog.Ctx(r.Context()).Debug().Str("network", addressNetwork(r.RemoteAddr)).Msg("unknown user code entered")
		if err := e.limiter.fail(r.Context(), counters...); err != nil {
			return foundCode{}, err
		}
	}
	return found, nil
}

// clientName returns the display name of a client.
func clientName(c events.Client, id string) string {
	if c.Name != "" {
		return c.Name
	}
	return id
}

// renderOutcome shows the result page of a flow that ended: approved,
// denied, expired, unknown, disabled, limited or error.
func (e *Edge) renderOutcome(w http.ResponseWriter, r *http.Request, outcome string, data pageData) {
	status := map[string]int{
		"approved": http.StatusOK,
		"denied":   http.StatusOK,
		"expired":  http.StatusGone,
		"unknown":  http.StatusNotFound,
		"disabled": http.StatusForbidden,
		"limited":  http.StatusTooManyRequests,
	}[outcome]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if outcome == "limited" {
		w.Header().Set("Retry-After", retryAfterSeconds(data.RetryAfter))
	}
	data.Title = "title." + outcome
	data.Outcome = outcome
	e.render(w, r, status, "result", data)
}

// renderCodeProblem shows the result page for a code that cannot be
// approved.
func (e *Edge) renderCodeProblem(w http.ResponseWriter, r *http.Request, found foundCode, data pageData) {
	switch found.problem {
	case codeLimited:
		data.RetryAfter = found.retryAfter
		e.renderOutcome(w, r, "limited", data)
	case codeUnknown:
		e.renderOutcome(w, r, "unknown", data)
	case codeDisabled:
		e.renderOutcome(w, r, "disabled", data)
	default:
		e.renderOutcome(w, r, "expired", data)
	}
}

// enterCodePage shows the code form, or, for a code pre-filled from the
// verification_uri_complete link, asks the person to confirm that it is the
// code on their TV. A scanned link never approves anything by itself, and
// this page does not look the code up, so it is no oracle for guessing.
func (e *Edge) enterCodePage(w http.ResponseWriter, r *http.Request) error {
	data := pageData{Title: "title.enter_code", CSRFToken: e.csrfToken(w, r)}

	raw := r.URL.Query().Get("user_code")
	if raw == "" {
		e.render(w, r, http.StatusOK, "enter_code", data)
		return nil
	}
	userCode, err := codes.NormalizeUserCode(raw)
	if err != nil {
		data.Error = "error.bad_code"
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	}

	data.Title = "title.confirm"
	data.UserCode = codes.FormatUserCode(userCode)
	e.render(w, r, http.StatusOK, "confirm_code", data)
	return nil
}

// submitCode checks a typed or confirmed code and moves on to consent.
func (e *Edge) submitCode(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	data := pageData{Title: "title.enter_code", CSRFToken: e.csrfToken(w, r)}
	if !e.validCSRF(r) {
		data.Error = "error.form_expired"
		e.render(w, r, http.StatusForbidden, "enter_code", data)
		return nil
	}

	raw := r.PostFormValue("user_code")
	if raw == "" {
		data.Error = "error.no_code"
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	}
	// The form shows what was typed again, so the person can correct it.
	data.UserCode = raw
	userCode, err := codes.NormalizeUserCode(raw)
	if err != nil {
		data.Error = "error.bad_code"
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
		return nil
	}

	found, err := e.findCode(r, userCode)
	if err != nil {
		return err
	}
	switch {
	case found.problem == codeOK:
		http.Redirect(w, r, consentPath(userCode, e.confirmationToken(r, userCode)), http.StatusSeeOther)
	case found.problem == codeUnknown && r.PostFormValue("from") != "link":
		data.Error = "error.bad_code"
		e.render(w, r, http.StatusBadRequest, "enter_code", data)
	default:
		e.renderCodeProblem(w, r, found, pageData{UserCode: codes.FormatUserCode(userCode)})
	}
	return nil
}

// consentPath is the redirect target after a code is confirmed: a fixed path
// with a canonical user code and the confirmation token, so no request can
// steer a redirect elsewhere.
func consentPath(userCode, confirmation string) string {
	return PathConsent + "?user_code=" + url.QueryEscape(codes.FormatUserCode(userCode)) +
		"&confirmed=" + url.QueryEscape(confirmation)
}

// confirmPath is the confirmation page of a code, where every path to
// consent that lacks this browser's confirmation is sent.
func confirmPath(userCode string) string {
	return PathDevice + "?user_code=" + url.QueryEscape(codes.FormatUserCode(userCode))
}

// consentPage shows the device's request, after sign-in. A request
// without this browser's confirmation of the code, such as a link to this
// page sent by someone else, goes to the confirmation page first.
func (e *Edge) consentPage(w http.ResponseWriter, r *http.Request) error {
	query := r.URL.Query()
	userCode, err := codes.NormalizeUserCode(query.Get("user_code"))
	if err != nil {
		http.Redirect(w, r, PathDevice, http.StatusSeeOther)
		return nil
	}
	confirmation := query.Get("confirmed")
	if !e.validConfirmation(r, userCode, confirmation) {
		http.Redirect(w, r, confirmPath(userCode), http.StatusSeeOther)
		return nil
	}
	return e.showConsent(w, r, userCode, confirmation, "")
}

// showConsent shows the consent page for userCode with an optional error
// message key, the sign-in page when nobody is signed in, or the outcome
// page when the code cannot be approved.
func (e *Edge) showConsent(w http.ResponseWriter, r *http.Request, userCode, confirmation, problem string) error {
	data := pageData{
		CSRFToken:    e.csrfToken(w, r),
		UserCode:     codes.FormatUserCode(userCode),
		Confirmation: confirmation,
		Error:        problem,
	}

	session, signedIn, err := e.currentSession(r.Context(), r)
	if err != nil {
		return err
	}
	if !signedIn {
		data.Title = "title.sign_in"
		e.render(w, r, http.StatusOK, "signin", data)
		return nil
	}

	// The caller checked the confirmation token. submitCode issues it only
	// after findCode found the code under the wrong-code limits, so this
	// lookup is not a guess and skips them.
	found, err := e.lookupUserCode(r.Context(), userCode)
	if err != nil {
		return err
	}
	if found.problem != codeOK {
		e.renderCodeProblem(w, r, found, pageData{UserCode: data.UserCode})
		return nil
	}

	data.Title = "title.consent"
	data.Username = session.Username
	data.ClientName = clientName(found.client, found.record.ClientID)
	data.DeviceKind = found.record.DeviceKind
	data.Scopes = found.record.Scopes
	data.RequestedAt = found.record.CreatedAt
	data.RequestedAgo = e.cfg.Now().Sub(found.record.CreatedAt)
	data.RequestedFrom = found.record.RequestedFrom
	e.render(w, r, http.StatusOK, "consent", data)
	return nil
}

// signIn checks a username and password, under the limits on failed
// sign-ins, and returns to the consent page or the devices page.
func (e *Edge) signIn(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	userCode, codeErr := codes.NormalizeUserCode(r.PostFormValue("user_code"))
	data := pageData{Title: "title.sign_in", CSRFToken: e.csrfToken(w, r)}
	if codeErr == nil {
		data.UserCode = codes.FormatUserCode(userCode)
		data.Confirmation = r.PostFormValue("confirmed")
	}
	if r.PostFormValue("next") == nextDevices {
		data.Next = nextDevices
	}

	if !e.validCSRF(r) {
		data.Error = "error.form_expired"
		e.render(w, r, http.StatusForbidden, "signin", data)
		return nil
	}

	username := accounts.NormalizeUsername(r.PostFormValue("username"))
	counters := e.signInCounters(r, username)
	wait, err := e.checkLimits(r, counters)
	if err != nil {
		return err
	}
	if wait > 0 {
		e.renderOutcome(w, r, "limited", pageData{RetryAfter: wait})
		return nil
	}

	account, err := e.accounts.Verify(r.Context(), username, r.PostFormValue("password"))
	if errors.Is(err, accounts.ErrInvalidCredentials) {
		zerolog.Ctx(r.Context()).Debug().Str("network", addressNetwork(r.RemoteAddr)).Msg("sign-in failed")
		if err := e.limiter.fail(r.Context(), counters...); err != nil {
			return err
		}
		data.Error = "error.bad_sign_in"
		e.render(w, r, http.StatusUnauthorized, "signin", data)
		return nil
	}
	if err != nil {
		return err
	}

	if err := e.startSession(r.Context(), w, r, account); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Str("account_id", account.ID).Msg("signed in")

	switch {
	case data.Next == nextDevices:
		http.Redirect(w, r, PathDevices, http.StatusSeeOther)
	case codeErr == nil && e.validConfirmation(r, userCode, data.Confirmation):
		http.Redirect(w, r, consentPath(userCode, data.Confirmation), http.StatusSeeOther)
	case codeErr == nil:
		http.Redirect(w, r, confirmPath(userCode), http.StatusSeeOther)
	default:
		http.Redirect(w, r, PathDevice, http.StatusSeeOther)
	}
	return nil
}

// signOut ends the session, for a person on a shared phone or signed in as
// someone else, and returns to the code's sign-in page or to the code page.
func (e *Edge) signOut(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	if !e.validCSRF(r) {
		http.Redirect(w, r, PathDevice, http.StatusSeeOther)
		return nil
	}
	if err := e.endSession(r.Context(), w, r); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Msg("signed out")

	userCode, err := codes.NormalizeUserCode(r.PostFormValue("user_code"))
	confirmation := r.PostFormValue("confirmed")
	if err == nil && e.validConfirmation(r, userCode, confirmation) {
		http.Redirect(w, r, consentPath(userCode, confirmation), http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, PathDevice, http.StatusSeeOther)
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
	confirmation := r.PostFormValue("confirmed")
	if !e.validConfirmation(r, userCode, confirmation) {
		http.Redirect(w, r, confirmPath(userCode), http.StatusSeeOther)
		return nil
	}
	if !e.validCSRF(r) {
		return e.showConsent(w, r, userCode, confirmation, "error.form_expired")
	}

	// The confirmation token shows that this browser found the code under
	// the wrong-code limits (see showConsent), so the lookup skips them. It
	// runs while the session is read, because both reads delay the decision.
	type lookup struct {
		found foundCode
		err   error
	}
	looked := make(chan lookup, 1)
	go func() {
		found, err := e.lookupUserCode(r.Context(), userCode)
		looked <- lookup{found, err}
	}()

	session, signedIn, err := e.currentSession(r.Context(), r)
	if err != nil {
		return err
	}
	if !signedIn {
		return e.showConsent(w, r, userCode, confirmation, "")
	}

	var approved bool
	switch r.PostFormValue("decision") {
	case "approve":
		approved = true
	case "deny":
	default:
		return e.showConsent(w, r, userCode, confirmation, "error.bad_decision")
	}

	data := pageData{UserCode: codes.FormatUserCode(userCode)}
	result := <-looked
	found, err := result.found, result.err
	if err != nil {
		return err
	}
	if found.problem != codeOK {
		e.renderCodeProblem(w, r, found, data)
		return nil
	}

	if err := e.publishDecision(r, found, session, approved); err != nil {
		return err
	}
	data.ClientName = clientName(found.client, found.record.ClientID)
	data.DeviceKind = found.record.DeviceKind
	if approved {
		e.renderOutcome(w, r, "approved", data)
	} else {
		e.renderOutcome(w, r, "denied", data)
	}
	return nil
}

// publishDecision publishes a person's decision on a pending code for the
// approver. The approver moves the code by compare-and-set, so a decision on
// a code that is no longer pending changes nothing.
func (e *Edge) publishDecision(r *http.Request, found foundCode, session events.Session, approved bool) error {
	payload, err := events.Encode(events.Decision{
		CodeID:    found.codeID,
		Approved:  approved,
		AccountID: session.AccountID,
		Username:  session.Username,
		DecidedAt: e.cfg.Now(),
	})
	if err != nil {
		return err
	}
	if _, err := e.js.Publish(r.Context(), events.Subject(events.SubjectDecision, found.codeID), payload); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Str("account_id", session.AccountID).Str("client_id", found.record.ClientID).
		Str("code_id", codes.LogID(found.codeID)).Bool("approved", approved).Msg("decision submitted")
	return nil
}
