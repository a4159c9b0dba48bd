package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"time"

	"github.com/streamco/deviceauth/internal/edge"
)

// phone is a person's browser, signed in once: its cookie jar holds the
// session and CSRF cookies that every consent post reuses.
type phone struct {
	client *http.Client
	// csrfToken is the form token derived from the jar's CSRF cookie. It
	// stays valid as long as the cookie does.
	csrfToken string
	origin    string
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// approvedTitle is the heading of the page the edge shows after an approval
// it accepted. Other outcomes, such as an expired form, also return status
// 200.
var approvedTitle = []byte("<h1>Device connected</h1>")

// signIn opens the code page for a CSRF cookie and token, then posts the
// sign-in form, which sets the session cookie.
func (r *run) signIn(ctx context.Context) (*phone, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	base, _ := url.Parse(r.cfg.BaseURL)
	ph := &phone{
		client: &http.Client{Transport: r.client.Transport, Jar: jar, CheckRedirect: noRedirects},
		origin: base.Scheme + "://" + base.Host,
	}

	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.BaseURL+edge.PathDevice, nil)
	if err != nil {
		return nil, err
	}
	page, err := do(ph.client, req)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", edge.PathDevice, err)
	}
	m := csrfField.FindSubmatch(page.body)
	if page.status != http.StatusOK || m == nil {
		return nil, fmt.Errorf("open %s: status %d without a CSRF token", edge.PathDevice, page.status)
	}
	ph.csrfToken = string(m[1])

	// Without a user code the edge redirects to the code page after
	// sign-in, which this client does not follow.
	res, err := postForm(ctx, ph.client, r.cfg.BaseURL, edge.PathSignIn, url.Values{
		"csrf_token": {ph.csrfToken},
		"username":   {r.cfg.Username},
		"password":   {r.cfg.Password},
	}, http.Header{"Origin": {ph.origin}})
	if err != nil {
		return nil, fmt.Errorf("sign in: %w", err)
	}
	if res.status != http.StatusSeeOther {
		return nil, fmt.Errorf("sign in as %q: status %d, want 303 (wrong username or password?)", r.cfg.Username, res.status)
	}
	r.rec.latencyIf(true, StepSignIn, res.done.Sub(start))
	return ph, nil
}

// approve posts the consent form with decision=approve for t's user code,
// as the Allow button does.
func (r *run) approve(ctx context.Context, ph *phone, t *ticket) {
	confirmed, err := r.confirm(ctx, ph, t)
	if err != nil {
		if ctx.Err() == nil {
			r.rec.fail(err.Error())
		}
		return
	}
	form := url.Values{
		"csrf_token": {ph.csrfToken},
		"user_code":  {t.userCode},
		"confirmed":  {confirmed},
		"decision":   {"approve"},
	}

	start, inWindow := time.Now(), r.rec.measuring.Load()
	t.approvedInWindow.Store(inWindow)
	t.approvedAt.Store(start.UnixNano())
	r.outstanding.Add(1)
	res, err := postForm(ctx, ph.client, r.cfg.BaseURL, edge.PathConsent, form, http.Header{"Origin": {ph.origin}})
	if err == nil && (res.status != http.StatusOK || !bytes.Contains(res.body, approvedTitle)) {
		err = errRejected
	}
	if err != nil {
		// The device gets no token for this approval, so the drain at the
		// end of the run must not wait for one.
		r.outstanding.Add(-1)
		t.approvedAt.Store(0)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errRejected) && res.status == http.StatusOK:
			r.rec.fail("consent: 200 without the approval page (form expired or signed out)")
		case errors.Is(err, errRejected):
			r.rec.fail(responseKind("consent", res))
		default:
			r.rec.fail(transportKind("consent", err))
		}
		return
	}

	r.rec.latencyIf(inWindow, StepApprovalPost, res.done.Sub(start))
	r.rec.countIf(inWindow, CountApprovals)
}

var errRejected = errors.New("approval rejected")

// confirm enters t's user code on the code page, as a person does before
// the consent page, and returns the confirmation token from the redirect to
// the consent page. The edge requires it on the consent post.
func (r *run) confirm(ctx context.Context, ph *phone, t *ticket) (string, error) {
	form := url.Values{"csrf_token": {ph.csrfToken}, "user_code": {t.userCode}}
	res, err := postForm(ctx, ph.client, r.cfg.BaseURL, edge.PathDevice, form, http.Header{"Origin": {ph.origin}})
	if err != nil {
		return "", errors.New(transportKind("confirm", err))
	}
	if res.status != http.StatusSeeOther {
		return "", errors.New(responseKind("confirm", res))
	}
	location, err := url.Parse(res.header.Get("Location"))
	if err != nil || location.Query().Get("confirmed") == "" {
		return "", errors.New("confirm: redirect without a confirmation token")
	}
	return location.Query().Get("confirmed"), nil
}
