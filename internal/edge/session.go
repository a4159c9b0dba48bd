package edge

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"net/http"
	"time"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
)

const (
	sessionCookie = "session"
	csrfCookie    = "csrf"
)

// currentSession returns the signed-in session of the request, if any.
func (e *Edge) currentSession(ctx context.Context, r *http.Request) (events.Session, bool, error) {
	cookie, err := r.Cookie(sessionCookie)
	if err != nil || cookie.Value == "" || len(cookie.Value) > 128 {
		return events.Session{}, false, nil
	}
	session, _, err := e.sessions.Get(ctx, e.hasher.SessionID(cookie.Value))
	if errors.Is(err, kv.ErrNotFound) {
		return events.Session{}, false, nil
	}
	if err != nil {
		return events.Session{}, false, err
	}
	if e.cfg.Now().Sub(session.CreatedAt) > e.cfg.SessionLifetime {
		return events.Session{}, false, nil
	}
	return session, true, nil
}

// startSession stores a new session for account and sets its cookie. A new
// id at every sign-in means an id planted before sign-in is worthless.
func (e *Edge) startSession(ctx context.Context, w http.ResponseWriter, r *http.Request, account events.Account) error {
	// The session the browser had before, if any, ends here, so a signed-out
	// or replaced id cannot be used again.
	if old, err := r.Cookie(sessionCookie); err == nil && old.Value != "" && len(old.Value) <= 128 {
		if err := e.sessions.Delete(ctx, e.hasher.SessionID(old.Value)); err != nil {
			return err
		}
	}

	id := rand.Text() + rand.Text()
	_, err := e.sessions.Put(ctx, e.hasher.SessionID(id), events.Session{
		AccountID: account.ID,
		Username:  account.Username,
		CreatedAt: e.cfg.Now(),
	})
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    id,
		Path:     "/",
		MaxAge:   int(e.cfg.SessionLifetime / time.Second),
		HttpOnly: true,
		Secure:   e.secureCookie,
		SameSite: http.SameSiteLaxMode,
	})
	return nil
}

// csrfToken returns the token forms must carry, setting the CSRF cookie it
// derives from when the browser has none. The token is an HMAC of the
// cookie, so any edge can check it without stored state, and a page on
// another site can neither read the cookie nor compute the token.
func (e *Edge) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if cookie, err := r.Cookie(csrfCookie); err == nil && len(cookie.Value) >= 26 && len(cookie.Value) <= 128 {
		return e.hasher.CSRFToken(cookie.Value)
	}
	value := rand.Text() + rand.Text()
	http.SetCookie(w, &http.Cookie{
		Name:     csrfCookie,
		Value:    value,
		Path:     "/",
		HttpOnly: true,
		Secure:   e.secureCookie,
		SameSite: http.SameSiteLaxMode,
	})
	return e.hasher.CSRFToken(value)
}

// validCSRF checks a form post: the token must match the cookie, and the
// request must come from the edge's own pages (see originAllowed).
func (e *Edge) validCSRF(r *http.Request) bool {
	if !e.originAllowed(r) {
		return false
	}
	cookie, err := r.Cookie(csrfCookie)
	if err != nil {
		return false
	}
	return e.hasher.ValidCSRFToken(cookie.Value, r.PostFormValue("csrf_token"))
}

// originAllowed reports whether a state-changing request comes from the
// edge's own pages. An Origin header other than "null" must be the edge's
// own, and a Sec-Fetch-Site header must not name another site. "null" is
// what browsers send for our own forms, because the pages set
// Referrer-Policy: no-referrer; the CSRF token still guards those posts.
func (e *Edge) originAllowed(r *http.Request) bool {
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" && origin != e.origin {
		return false
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	default:
		return false
	}
}

// confirmationToken returns the proof, bound to this browser's CSRF cookie,
// that the person confirmed or typed userCode on the code page. It is empty
// when the browser has no CSRF cookie.
func (e *Edge) confirmationToken(r *http.Request, userCode string) string {
	cookie, err := r.Cookie(csrfCookie)
	if err != nil || cookie.Value == "" {
		return ""
	}
	return e.hasher.ConfirmationToken(cookie.Value, userCode)
}

// validConfirmation reports whether token proves that this browser confirmed
// userCode. Without it the consent page sends the person to the
// confirmation page, so a link to the consent page from elsewhere never
// skips the question "Is this your code?".
func (e *Edge) validConfirmation(r *http.Request, userCode, token string) bool {
	want := e.confirmationToken(r, userCode)
	return want != "" && token != "" && hmac.Equal([]byte(want), []byte(token))
}

// endSession deletes the request's session, if any, and expires its cookie.
func (e *Edge) endSession(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if cookie, err := r.Cookie(sessionCookie); err == nil && cookie.Value != "" && len(cookie.Value) <= 128 {
		if err := e.sessions.Delete(ctx, e.hasher.SessionID(cookie.Value)); err != nil {
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   e.secureCookie,
		SameSite: http.SameSiteLaxMode,
	})
	return nil
}
