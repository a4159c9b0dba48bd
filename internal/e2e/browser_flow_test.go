package e2e

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/kv"
)

// tvResult is what the TV side ends with.
type tvResult struct {
	token *oauth2.Token
	err   error
}

// startTV requests codes with golang.org/x/oauth2 and waits for the token
// with held polls in the background, as a TV app does while the person uses
// the phone.
func startTV(t *testing.T, sys *system, scopes ...string) (*oauth2.DeviceAuthResponse, <-chan tvResult) {
	t.Helper()
	cfg := sys.oauthConfig(devstack.DemoClientID, scopes...)
	ctx := contextWithClient(withTimeout(t, 60*time.Second), &http.Client{Transport: preferWait{hold: 20}})

	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	result := make(chan tvResult, 1)
	go func() {
		tok, err := cfg.DeviceAccessToken(ctx, da)
		result <- tvResult{token: tok, err: err}
	}()
	return da, result
}

// waitForTV returns the TV's result, failing the test after timeout.
func waitForTV(t *testing.T, result <-chan tvResult, timeout time.Duration) tvResult {
	t.Helper()
	select {
	case r := <-result:
		return r
	case <-time.After(timeout):
		t.Fatalf("the TV got no answer within %s", timeout)
		return tvResult{}
	}
}

// oauthErrorCode returns the RFC 6749 error code of an x/oauth2 error.
func oauthErrorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// signInAs fills in and submits the sign-in page.
func (tb *tab) signInAs(username, password string) {
	tb.t.Helper()
	tb.must("sign in",
		chromedp.SendKeys(chromedp.CSS("#username"), username),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Submit(chromedp.CSS("#password")),
	)
}

// openAndConfirm opens the QR link, checks that the confirmation page shows
// the TV's code, and confirms it.
func (tb *tab) openAndConfirm(da *oauth2.DeviceAuthResponse) {
	tb.t.Helper()
	tb.must("open the QR link", chromedp.Navigate(da.VerificationURIComplete))
	tb.waitForPage("Is this your code?")
	if got := tb.text(`.code [aria-hidden="true"]`); got != da.UserCode {
		tb.t.Errorf("confirmation page shows code %q, want the TV's %q", got, da.UserCode)
	}
	tb.must("confirm the code", chromedp.Click(chromedp.Search(`//button[normalize-space()="Yes, it matches"]`)))
}

func TestBrowserApproveFromQRLink(t *testing.T) {
	t.Parallel()
	browser := newTab(t)
	sys := startSystem(t)
	da, tv := startTV(t, sys, "profile", "offline_access")

	browser.openAndConfirm(da)
	browser.waitForPage("Sign in")
	browser.signInAs(devstack.DemoUsername, devstack.DemoPassword)

	browser.waitForPage("Allow this device?")
	consent := browser.text("main")
	for _, want := range []string{"StreamCo TV", da.UserCode, "Signed in as demo", "See your profile name", "Stay signed in", "(just now)", "127.0.0.0/24"} {
		if !strings.Contains(consent, want) {
			t.Errorf("consent page does not show %q:\n%s", want, consent)
		}
	}
	if !browser.fitsViewport() {
		t.Error("the consent page is wider than a phone screen")
	}
	if tree := browser.accessibilityTree(); !hasNode(tree, "button", "Allow") || !hasNode(tree, "button", "Deny") {
		t.Errorf("the consent page has no Allow and Deny buttons for screen readers: %v", tree)
	}
	select {
	case r := <-tv:
		t.Fatalf("the TV got an answer before the approval: %+v", r)
	default:
	}

	browser.must("approve", chromedp.Click(chromedp.CSS(`button[value="approve"]`)))
	browser.waitForPage("Device connected")

	got := waitForTV(t, tv, 10*time.Second)
	if got.err != nil {
		t.Fatalf("the TV got an error after approval: %v", got.err)
	}
	if got.token.AccessToken == "" || got.token.RefreshToken == "" {
		t.Errorf("the TV got an access token %t and a refresh token %t, want both", got.token.AccessToken != "", got.token.RefreshToken != "")
	}

	// The person removes the TV again from the devices page.
	browser.must("open the devices page", chromedp.Click(chromedp.Search(`//a[normalize-space()="See your connected devices"]`)))
	browser.waitForPage("Your devices")
	if devices := browser.text("main"); !strings.Contains(devices, "StreamCo TV") {
		t.Errorf("the devices page does not list the TV:\n%s", devices)
	}
	browser.must("remove the TV", chromedp.Click(chromedp.Search(`//button[normalize-space()="Remove StreamCo TV"]`)))
	browser.must("wait for the removal notice", chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)))
	if notice := browser.text(`[role="status"]`); !strings.Contains(notice, "StreamCo TV was removed") {
		t.Errorf("after removal the page says %q, want that the TV was removed", notice)
	}
	_, grant := sys.onlyGrant()
	if grant.RevokedAt.IsZero() {
		t.Error("the grant is not marked revoked after removal in the browser")
	}
	refresh := bucketOf[events.RefreshToken](sys, events.BucketRefreshTokens)
	if _, _, err := refresh.Get(t.Context(), grant.RefreshTokenID); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("the refresh token record is still stored after removal (error %v)", err)
	}
}

func TestBrowserDeny(t *testing.T) {
	t.Parallel()
	browser := newTab(t)
	sys := startSystem(t)
	da, tv := startTV(t, sys, "profile")

	browser.openAndConfirm(da)
	browser.waitForPage("Sign in")
	browser.signInAs(devstack.DemoUsername, devstack.DemoPassword)
	browser.waitForPage("Allow this device?")
	browser.must("deny", chromedp.Click(chromedp.CSS(`button[value="deny"]`)))
	browser.waitForPage("Request denied")

	got := waitForTV(t, tv, 10*time.Second)
	if code := oauthErrorCode(got.err); code != "access_denied" {
		t.Errorf("the TV got %v, want access_denied", got.err)
	}
}

func TestBrowserWrongCode(t *testing.T) {
	t.Parallel()
	browser := newTab(t)
	sys := startSystem(t)
	da, _ := startTV(t, sys, "profile")

	for _, wrong := range []string{"BBBB-BBBB", "hello"} {
		browser.must("open the code page", chromedp.Navigate(sys.URL+"/device"))
		browser.waitForPage("Connect a device")
		browser.must("type "+wrong,
			chromedp.SendKeys(chromedp.CSS("#user_code"), wrong),
			chromedp.Submit(chromedp.CSS("#user_code")),
		)
		browser.waitForPage("Connect a device")
		if alert := browser.text(`[role="alert"]`); !strings.Contains(alert, "isn't valid") {
			t.Errorf("after typing %q the alert says %q, want that the code isn't valid", wrong, alert)
		}
	}

	// The right code, typed in lower case with a space for the dash, is
	// accepted.
	typed := strings.ToLower(strings.Replace(da.UserCode, "-", " ", 1))
	browser.must("type the right code",
		chromedp.Clear(chromedp.CSS("#user_code")),
		chromedp.SendKeys(chromedp.CSS("#user_code"), typed),
		chromedp.Submit(chromedp.CSS("#user_code")),
	)
	browser.waitForPage("Sign in")
}

func TestBrowserExpiredCode(t *testing.T) {
	t.Parallel()
	browser := newTab(t)
	sys := startSystem(t)
	da, tv := startTV(t, sys, "profile")

	sys.clock.Advance(11 * time.Minute)
	browser.openAndConfirm(da)
	browser.waitForPage("Code expired")
	if status := browser.text(`[role="status"]`); !strings.Contains(status, "Start again on your TV") {
		t.Errorf("the page says %q, want that the person starts again on the TV", status)
	}

	got := waitForTV(t, tv, 10*time.Second)
	if code := oauthErrorCode(got.err); code != "expired_token" {
		t.Errorf("the TV got %v, want expired_token", got.err)
	}
}

func TestBrowserPagesForScreenReaders(t *testing.T) {
	t.Parallel()
	browser := newTab(t)
	sys := startSystem(t)
	da, _ := startTV(t, sys, "profile")

	browser.must("open the code page", chromedp.Navigate(sys.URL+"/device"))
	browser.waitForPage("Connect a device")
	tree := browser.accessibilityTree()
	if !hasNode(tree, "textbox", "Code") {
		t.Errorf("the code field has no accessible name Code: %v", tree)
	}
	if !hasNode(tree, "heading", "Connect a device") {
		t.Errorf("the page has no heading: %v", tree)
	}
	if !browser.fitsViewport() {
		t.Error("the code page is wider than a phone screen")
	}

	browser.must("type a wrong code",
		chromedp.SendKeys(chromedp.CSS("#user_code"), "BBBB-BBBB"),
		chromedp.Submit(chromedp.CSS("#user_code")),
	)
	browser.must("wait for the alert", chromedp.WaitVisible(chromedp.CSS(`[role="alert"]`)))
	if tree := browser.accessibilityTree(); !hasNode(tree, "alert", "") {
		t.Errorf("the wrong code is not announced as an alert: %v", tree)
	}

	browser.must("open the QR link", chromedp.Navigate(da.VerificationURIComplete))
	browser.waitForPage("Is this your code?")
	spelt := strings.Join(strings.Split(strings.Replace(da.UserCode, "-", "", 1)[:4], ""), " ") + " dash"
	tree = browser.accessibilityTree()
	if !hasNode(tree, "StaticText", spelt) {
		t.Errorf("screen readers do not get the code letter by letter (%q): %v", spelt, tree)
	}
	if !hasNode(tree, "button", "Yes, it matches") || !hasNode(tree, "link", "No, enter a different code") {
		t.Errorf("the confirmation choices are not a named button and link: %v", tree)
	}
	if !browser.fitsViewport() {
		t.Error("the confirmation page is wider than a phone screen")
	}
}
