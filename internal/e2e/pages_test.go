package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/oauth"
)

// enterCode loads the code page and submits code as typed.
func (ph *phone) enterCode(code string) page {
	ph.t.Helper()
	form := ph.get(ph.base + edge.PathDevice)
	return ph.post(edge.PathDevice, url.Values{"csrf_token": {form.csrf(ph.t)}, "user_code": {code}})
}

// signIn signs the phone in from the sign-in page of the devices page.
func (ph *phone) signIn(username, password string) page {
	ph.t.Helper()
	signInPage := ph.get(ph.base + edge.PathDevices)
	return ph.post(edge.PathSignIn, url.Values{
		"csrf_token": {signInPage.csrf(ph.t)},
		"next":       {"devices"},
		"username":   {username},
		"password":   {password},
	})
}

func TestPagesSecurityHeaders(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	for _, path := range []string{
		edge.PathDevice,
		edge.PathDevice + "?user_code=" + url.QueryEscape(da.UserCode),
		edge.PathConsent + "?user_code=" + url.QueryEscape(da.UserCode),
		edge.PathDevices,
	} {
		resp, err := http.Get(sys.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		h := resp.Header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q lacks default-src 'none' or frame-ancestors 'none'", path, csp)
		}
		if cc := h.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", path, cc)
		}
		if xfo := h.Get("X-Frame-Options"); xfo != "DENY" {
			t.Errorf("GET %s: X-Frame-Options %q, want DENY", path, xfo)
		}
		if rp := h.Get("Referrer-Policy"); rp != "no-referrer" {
			t.Errorf("GET %s: Referrer-Policy %q, want no-referrer", path, rp)
		}
	}
}

func TestPagesHaveNoScripts(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	ph := sys.newPhone()

	pages := []page{
		ph.get(sys.URL + edge.PathDevice),
		ph.get(da.VerificationURIComplete),
		ph.enterCode("BBBB-BBBB"),
	}
	pages = append(pages, ph.decide(da.VerificationURIComplete, "approve"))
	for _, p := range pages {
		lower := strings.ToLower(p.Body)
		for _, banned := range []string{"<script", "javascript:", " onclick=", " onload=", "https://", "//fonts."} {
			if strings.Contains(lower, banned) {
				t.Errorf("page %q contains %q", p.title(), banned)
			}
		}
		if !strings.Contains(p.Body, `<html lang="en">`) {
			t.Errorf("page %q does not declare its language", p.title())
		}
	}
}

func TestPagesChooseLanguage(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)

	for _, header := range []string{"", "en-GB,en;q=0.9", "de-CH, fr;q=0.8, *;q=0.1", "xx;q=0"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, sys.URL+edge.PathDevice, nil)
		if header != "" {
			req.Header.Set("Accept-Language", header)
		}
		resp := sys.do(req)
		if got := resp.Header.Get("Content-Language"); got != "en" {
			t.Errorf("Accept-Language %q: Content-Language %q, want en, the only complete catalog", header, got)
		}
		if !strings.Contains(resp.Header.Get("Vary"), "Accept-Language") {
			t.Errorf("Accept-Language %q: Vary %q does not name Accept-Language", header, resp.Header.Get("Vary"))
		}
		if !strings.Contains(string(resp.Body), "Connect a device") {
			t.Errorf("Accept-Language %q: the page is not the English code page", header)
		}
	}
}

func TestCodeFieldAcceptsAnyForm(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	plain := strings.ReplaceAll(da.UserCode, "-", "")

	for _, typed := range []string{
		da.UserCode,
		strings.ToLower(da.UserCode),
		plain,
		strings.ToLower(plain[:4]) + " " + plain[4:],
		" " + plain[:2] + " " + plain[2:6] + "-" + plain[6:] + " ",
	} {
		got := sys.newPhone().enterCode(typed)
		if got.title() != "Sign in" {
			t.Errorf("typed %q: got %q (status %d), want the sign-in page", typed, got.title(), got.Status)
		}
	}
}

func TestUnknownCodeOutcomes(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	ph := sys.newPhone()

	typed := ph.enterCode("bbbb-bbbb")
	if typed.Status != http.StatusBadRequest || typed.title() != "Connect a device" {
		t.Errorf("typed unknown code: got %q (status %d), want the code page again with 400", typed.title(), typed.Status)
	}
	if !strings.Contains(typed.Body, `role="alert">That code isn&#39;t valid`) {
		t.Errorf("typed unknown code: no alert that the code isn't valid:\n%s", typed.Body)
	}
	if !strings.Contains(typed.Body, `value="bbbb-bbbb"`) || !strings.Contains(typed.Body, `aria-invalid="true"`) {
		t.Error("typed unknown code: the field does not keep the typed code marked invalid")
	}

	confirm := ph.get(sys.URL + edge.PathDevice + "?user_code=BBBB-BBBB")
	linked := ph.post(edge.PathDevice, url.Values{"csrf_token": {confirm.csrf(t)}, "user_code": {"BBBB-BBBB"}, "from": {"link"}})
	if linked.Status != http.StatusNotFound || linked.title() != "Code not found" {
		t.Errorf("confirmed unknown code from a link: got %q (status %d), want %q with 404", linked.title(), linked.Status, "Code not found")
	}
}

// TestConsentLinkNeedsConfirmation sends a signed-in person a link straight
// to the consent page of someone else's code, as a phisher would: the page
// asks whether the code is the one on their TV instead.
func TestConsentLinkNeedsConfirmation(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	ph := sys.newPhone()
	ph.signIn(devstack.DemoUsername, devstack.DemoPassword)

	for _, link := range []string{
		edge.PathConsent + "?user_code=" + url.QueryEscape(da.UserCode),
		edge.PathConsent + "?user_code=" + url.QueryEscape(da.UserCode) + "&confirmed=forged",
	} {
		got := ph.get(sys.URL + link)
		if got.title() != "Is this your code?" {
			t.Errorf("GET %s: got %q (status %d), want the confirmation page", link, got.title(), got.Status)
		}
	}

	// A decision posted without the confirmation is sent there too.
	form := ph.get(sys.URL + edge.PathDevice)
	got := ph.post(edge.PathConsent, url.Values{"csrf_token": {form.csrf(t)}, "user_code": {da.UserCode}, "decision": {"approve"}})
	if got.title() != "Is this your code?" {
		t.Errorf("decision without confirmation: got %q (status %d), want the confirmation page", got.title(), got.Status)
	}
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeAuthorizationPending)
}

func TestDisabledClientOnPhone(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	ph := sys.newPhone()
	ph.signIn(devstack.DemoUsername, devstack.DemoPassword)

	// The person reaches the consent page before the switch is turned.
	confirm := ph.get(da.VerificationURIComplete)
	consent := ph.post(edge.PathDevice, url.Values{"csrf_token": {confirm.csrf(t)}, "user_code": {da.UserCode}, "from": {"link"}})
	if consent.title() != "Allow this device?" {
		t.Fatalf("before the switch: got %q (status %d), want the consent page", consent.title(), consent.Status)
	}

	// The operator switches the device flow off while the code is pending.
	client := events.Client{
		ID: devstack.DemoClientID, Name: "StreamCo TV", Public: true, DeviceFlowDisabled: true,
		Scopes: []string{"profile", "offline_access"}, Grants: []string{oauth.GrantTypeDeviceCode},
	}
	sys.storeClient(client)
	waitFor(t, 5*time.Second, "the edge to see the client switched off", func() bool {
		return sys.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {client.ID}}, nil).StatusCode == http.StatusBadRequest
	})

	decided := ph.post(edge.PathConsent, url.Values{
		"csrf_token": {consent.csrf(t)},
		"user_code":  {da.UserCode},
		"confirmed":  {consent.confirmation(t)},
		"decision":   {"approve"},
	})
	if decided.Status != http.StatusForbidden || decided.title() != "Connecting this app is switched off" {
		t.Errorf("approving for a switched-off client: got %q (status %d), want the switched-off page with 403", decided.title(), decided.Status)
	}
	again := ph.post(edge.PathDevice, url.Values{"csrf_token": {confirm.csrf(t)}, "user_code": {da.UserCode}, "from": {"link"}})
	if again.Status != http.StatusForbidden {
		t.Errorf("confirming the code of a switched-off client: status %d, want 403", again.Status)
	}
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeUnauthorizedClient)
}

// sessionCookie returns the phone's session cookie value, or "".
func (ph *phone) sessionCookie() string {
	base, _ := url.Parse(ph.base)
	for _, c := range ph.client.Jar.Cookies(base) {
		if c.Name == "session" {
			return c.Value
		}
	}
	return ""
}

func TestSessionRotatesAndSignsOut(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	ph := sys.newPhone()

	// A session id planted before sign-in is not the one after it.
	base, _ := url.Parse(sys.URL)
	ph.client.Jar.SetCookies(base, []*http.Cookie{{Name: "session", Value: "PLANTEDPLANTEDPLANTEDPLANTED", Path: "/"}})
	ph.signIn(devstack.DemoUsername, devstack.DemoPassword)
	first := ph.sessionCookie()
	if first == "" || first == "PLANTEDPLANTEDPLANTEDPLANTED" {
		t.Fatalf("session cookie after sign-in is %q, want a new id", first)
	}
	ph.signIn(devstack.DemoUsername, devstack.DemoPassword)
	if second := ph.sessionCookie(); second == first {
		t.Error("signing in again kept the same session id")
	}

	devices := ph.get(sys.URL + edge.PathDevices)
	out := ph.post(edge.PathSignOut, url.Values{"csrf_token": {devices.csrf(t)}})
	if out.title() != "Connect a device" {
		t.Errorf("after signing out got %q (status %d), want the code page", out.title(), out.Status)
	}
	if again := ph.get(sys.URL + edge.PathDevices); again.title() != "Sign in" {
		t.Errorf("the devices page after signing out is %q, want the sign-in page", again.title())
	}
}

func TestRedirectsStayOnOurPages(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	ph := sys.newPhone()
	// Record every redirect instead of following it.
	ph.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	codePage := ph.get(sys.URL + edge.PathDevice)
	token := codePage.csrf(t)
	posts := []struct {
		path string
		form url.Values
	}{
		{edge.PathDevice, url.Values{"csrf_token": {token}, "user_code": {da.UserCode}}},
		{edge.PathSignIn, url.Values{"csrf_token": {token}, "username": {"demo"}, "password": {"demo"}, "next": {"https://evil.example/"}}},
		{edge.PathSignIn, url.Values{"csrf_token": {token}, "username": {"demo"}, "password": {"demo"}, "user_code": {"//evil.example"}}},
		{edge.PathSignIn, url.Values{"csrf_token": {token}, "username": {"demo"}, "password": {"demo"}, "user_code": {da.UserCode}, "confirmed": {"x\r\nLocation: https://evil.example"}}},
		{edge.PathConsent, url.Values{"csrf_token": {token}, "user_code": {"https://evil.example"}, "decision": {"approve"}}},
		{edge.PathRevokeDevice, url.Values{"csrf_token": {token}, "grant_id": {"../../x"}}},
		{edge.PathSignOut, url.Values{"csrf_token": {token}, "user_code": {da.UserCode}, "confirmed": {"//evil.example"}}},
	}
	for _, p := range posts {
		resp, err := ph.client.PostForm(sys.URL+p.path, p.form)
		if err != nil {
			t.Fatalf("POST %s: %v", p.path, err)
		}
		resp.Body.Close()
		location := resp.Header.Get("Location")
		if resp.StatusCode/100 != 3 {
			continue
		}
		if !strings.HasPrefix(location, "/device") || strings.HasPrefix(location, "//") || strings.ContainsAny(location, "\r\n") {
			t.Errorf("POST %s with %v redirected to %q, want a path of our own pages", p.path, p.form, location)
		}
	}
	for _, path := range []string{
		edge.PathConsent + "?user_code=" + url.QueryEscape("//evil.example"),
		edge.PathConsent + "?user_code=" + url.QueryEscape(da.UserCode) + "&confirmed=" + url.QueryEscape("https://evil.example"),
	} {
		resp, err := ph.client.Get(sys.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if location := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && !strings.HasPrefix(location, "/device") {
			t.Errorf("GET %s redirected to %q, want a path of our own pages", path, location)
		}
	}
}
