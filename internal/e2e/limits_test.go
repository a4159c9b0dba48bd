package e2e

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
)

// withLimits sets the edge's abuse limits. Every limit not named stays at
// its default.
func withLimits(limits edge.Limits) systemOption {
	return func(cfg *devstack.Config) { cfg.Edge.Limits = limits }
}

// assertLimitedPage checks the page a rate-limited person sees.
func assertLimitedPage(t *testing.T, p page, what string) {
	t.Helper()
	if p.Status != http.StatusTooManyRequests {
		t.Errorf("%s: status %d, want 429", what, p.Status)
	}
	if p.title() != "Too many attempts" {
		t.Errorf("%s: page %q, want %q", what, p.title(), "Too many attempts")
	}
	if !strings.Contains(p.Body, "wait ") {
		t.Errorf("%s: the page does not say how long to wait", what)
	}
}

func TestWrongCodesLimitedPerBrowser(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{WrongCodesPerBrowser: edge.Limit{Max: 3, Window: 5 * time.Minute}}))
	da := sys.authorize(devstack.DemoClientID, "profile")
	ph := sys.newPhone()

	for i := range 3 {
		if got := ph.enterCode("BBBB-BBBB"); got.Status != http.StatusBadRequest {
			t.Fatalf("wrong code %d: status %d, want 400", i+1, got.Status)
		}
	}
	// Over the limit even the right code is not looked up.
	limited := ph.enterCode(da.UserCode)
	assertLimitedPage(t, limited, "fourth code from one browser")

	// Another browser at the same address is not held back.
	if got := sys.newPhone().enterCode(da.UserCode); got.title() != "Sign in" {
		t.Errorf("another browser: got %q (status %d), want the sign-in page", got.title(), got.Status)
	}

	// The window passes and the first browser may try again.
	sys.clock.Advance(5 * time.Minute)
	if got := ph.enterCode(da.UserCode); got.title() != "Sign in" {
		t.Errorf("after the window: got %q (status %d), want the sign-in page", got.title(), got.Status)
	}
}

// TestConfirmedConsentSkipsCodeLimits lets a browser reach the consent page
// with the right code and then reach its wrong-code limit. The consent post
// carries the confirmation that the code was found under the limits, so
// the approval goes through.
func TestConfirmedConsentSkipsCodeLimits(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{WrongCodesPerBrowser: edge.Limit{Max: 3, Window: 5 * time.Minute}}))
	da := sys.authorize(devstack.DemoClientID, "profile")
	ph := sys.newPhone()

	signIn := ph.enterCode(da.UserCode)
	if signIn.title() != "Sign in" {
		t.Fatalf("right code: got %q (status %d), want the sign-in page", signIn.title(), signIn.Status)
	}
	consent := ph.post(edge.PathSignIn, url.Values{
		"csrf_token": {signIn.csrf(t)},
		"user_code":  {da.UserCode},
		"confirmed":  {signIn.confirmation(t)},
		"username":   {devstack.DemoUsername},
		"password":   {devstack.DemoPassword},
	})
	if consent.title() != "Allow this device?" {
		t.Fatalf("after sign-in: got %q (status %d), want the consent page", consent.title(), consent.Status)
	}

	for i := range 3 {
		if got := ph.enterCode("BBBB-BBBB"); got.Status != http.StatusBadRequest {
			t.Fatalf("wrong code %d: status %d, want 400", i+1, got.Status)
		}
	}
	assertLimitedPage(t, ph.enterCode(da.UserCode), "code entered over the limit")

	approved := ph.post(edge.PathConsent, url.Values{
		"csrf_token": {consent.csrf(t)},
		"user_code":  {da.UserCode},
		"confirmed":  {consent.confirmation(t)},
		"decision":   {"approve"},
	})
	if approved.title() != "Device connected" {
		t.Errorf("confirmed consent over the limit: got %q (status %d), want the approval page", approved.title(), approved.Status)
	}
}

func TestWrongCodesLimitedPerAddressAcrossEdges(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{WrongCodesPerAddress: edge.Limit{Max: 4, Window: 10 * time.Minute}}))
	other := sys.secondEdge()
	da := sys.authorize(devstack.DemoClientID, "profile")

	// Fresh browsers, half of them on the second edge, share the address.
	for i := range 4 {
		ph := sys.newPhone()
		if i%2 == 1 {
			ph.base = other
		}
		if got := ph.enterCode("BBBB-BBBB"); got.Status != http.StatusBadRequest {
			t.Fatalf("wrong code %d: status %d, want 400", i+1, got.Status)
		}
	}
	assertLimitedPage(t, sys.newPhone().enterCode(da.UserCode), "first edge after four wrong codes")
	ph := sys.newPhone()
	ph.base = other
	assertLimitedPage(t, ph.enterCode(da.UserCode), "second edge after four wrong codes")
}

func TestWrongCodesLimitedGlobally(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{WrongCodesGlobal: edge.Limit{Max: 2, Window: time.Minute}}))
	da := sys.authorize(devstack.DemoClientID, "profile")

	sys.newPhone().enterCode("BBBB-BBBB")
	sys.newPhone().enterCode("CCCC-CCCC")
	assertLimitedPage(t, sys.newPhone().enterCode(da.UserCode), "any browser after the global limit")
}

func TestHouseholdIsNotLimited(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{
		WrongCodesPerAddress:    edge.Limit{Max: 2, Window: 10 * time.Minute},
		FailedSignInsPerAddress: edge.Limit{Max: 2, Window: 10 * time.Minute},
	}))

	// Six devices in one home, all approved from phones on one address:
	// successes never count.
	for i := range 6 {
		da := sys.authorize(devstack.DemoClientID, "profile")
		result := sys.newPhone().decide(da.VerificationURIComplete, "approve")
		if result.title() != "Device connected" {
			t.Fatalf("device %d: phone ended on %q (status %d), want %q", i+1, result.title(), result.Status, "Device connected")
		}
	}
}

func TestFailedSignInsLimitedPerAccount(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{FailedSignInsPerAccount: edge.Limit{Max: 3, Window: 15 * time.Minute}}))

	for i := range 3 {
		// A new browser each time, as an attacker rotating cookies would.
		if got := sys.newPhone().signIn("DEMO", "wrong"); got.Status != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: status %d, want 401", i+1, got.Status)
		}
	}
	limited := sys.newPhone().signIn(devstack.DemoUsername, devstack.DemoPassword)
	assertLimitedPage(t, limited, "right password after three wrong ones")

	sys.clock.Advance(15 * time.Minute)
	if got := sys.newPhone().signIn(devstack.DemoUsername, devstack.DemoPassword); got.title() != "Your devices" {
		t.Errorf("after the window: got %q (status %d), want the devices page", got.title(), got.Status)
	}
}

func TestFailedSignInsLimitedPerAddress(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{FailedSignInsPerAddress: edge.Limit{Max: 3, Window: 15 * time.Minute}}))

	for i := range 3 {
		if got := sys.newPhone().signIn("user"+strconv.Itoa(i), "wrong"); got.Status != http.StatusUnauthorized {
			t.Fatalf("wrong sign-in %d: status %d, want 401", i+1, got.Status)
		}
	}
	assertLimitedPage(t, sys.newPhone().signIn(devstack.DemoUsername, devstack.DemoPassword), "sign-in after three failures from one address")
}

func TestLimitedAPIAnswers429(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withLimits(edge.Limits{WrongCodesPerBrowser: edge.Limit{Max: 2, Window: 10 * time.Minute}}))
	app := sys.newApp()
	app.signIn(devstack.DemoUsername, devstack.DemoPassword)

	for range 2 {
		if resp := app.call(edge.PathAPILookup, `{"user_code":"BBBB-BBBB"}`, nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("unknown code: status %d, want 404: %s", resp.StatusCode, resp.Body)
		}
	}
	resp := app.call(edge.PathAPILookup, `{"user_code":"BBBB-BBBB"}`, nil)
	assertOAuthError(t, resp, http.StatusTooManyRequests, "rate_limited")
	seconds, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || seconds < 1 || seconds > 600 {
		t.Errorf("Retry-After %q, want 1 to 600 seconds", resp.Header.Get("Retry-After"))
	}
}
