package e2e

import (
	"bytes"
	"errors"
	"image/png"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/qr"
	"github.com/streamco/deviceauth/internal/tvclient"
)

// screen is the TV's terminal: it keeps what the client printed and sends
// the verification_uri_complete it shows on link once.
type screen struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	link chan string
	sent bool
}

var openDirectly = regexp.MustCompile(`Open directly: (\S+)`)

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if m := openDirectly.FindStringSubmatch(s.buf.String()); m != nil && !s.sent {
		s.sent = true
		s.link <- m[1]
	}
	return len(p), nil
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// runTV runs the reference TV client in the background, holding each poll
// for up to hold, and returns its screen and the channel of its result.
func runTV(t *testing.T, sys *system, hold time.Duration) (*screen, <-chan error, *tvclient.Identity) {
	t.Helper()
	out := &screen{link: make(chan string, 1)}
	done := make(chan error, 1)
	var id tvclient.Identity
	go func() {
		_, got, err := tvclient.SignIn(withTimeout(t, 30*time.Second), tvclient.Config{
			Server:         sys.URL,
			ClientID:       devstack.DemoClientID,
			Scopes:         []string{"profile", "offline_access"},
			Hold:           hold,
			DarkBackground: true,
			UserAgent:      "deviceauth-reference-tv/1 (SmartTV)",
			Out:            out,
		})
		id = got
		done <- err
	}()
	return out, done, &id
}

func TestTVClientSignsIn(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	out, done, id := runTV(t, sys, 20*time.Second)

	var link string
	select {
	case link = <-out.link:
	case err := <-done:
		t.Fatalf("the TV client stopped before it showed a code: %v\n%s", err, out)
	case <-time.After(10 * time.Second):
		t.Fatalf("the TV client showed no code:\n%s", out)
	}
	parsed, err := url.Parse(link)
	if err != nil {
		t.Fatalf("the TV shows an invalid link %q: %v", link, err)
	}
	userCode := parsed.Query().Get("user_code")
	screenText := out.String()
	if !strings.Contains(screenText, "enter the code\n  "+userCode) {
		t.Errorf("the TV does not show the user code %q to type:\n%s", userCode, screenText)
	}
	if !strings.Contains(screenText, "█") {
		t.Errorf("the TV draws no QR code:\n%s", screenText)
	}

	sys.newPhone().decide(link, "approve")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the TV client failed after approval: %v\n%s", err, out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the TV client got no token within 10s of the approval")
	}
	if id.Username != devstack.DemoUsername {
		t.Errorf("signed in as %q, want %q", id.Username, devstack.DemoUsername)
	}
	if !strings.HasPrefix(id.Subject, "acct_") {
		t.Errorf("subject %q is not an account id", id.Subject)
	}
	if !strings.Contains(out.String(), "Signed in as demo (account "+id.Subject) {
		t.Errorf("the TV does not say who it is signed in as:\n%s", out)
	}
	if _, grant := sys.onlyGrant(); grant.DeviceKind != "Smart TV" {
		t.Errorf("the grant names the device %q, want Smart TV from the client's User-Agent", grant.DeviceKind)
	}
}

func TestTVClientDenied(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	out, done, _ := runTV(t, sys, 20*time.Second)

	link := <-out.link
	sys.newPhone().decide(link, "deny")
	select {
	case err := <-done:
		if !errors.Is(err, tvclient.ErrDenied) {
			t.Errorf("the TV client ended with %v, want ErrDenied", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the TV client did not stop within 10s of the denial")
	}
}

func TestTVClientExpired(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	// Plain polls, so the first poll after the jump gets expired_token.
	out, done, _ := runTV(t, sys, 0)

	<-out.link
	sys.clock.Advance(11 * time.Minute)
	select {
	case err := <-done:
		if !errors.Is(err, tvclient.ErrExpired) {
			t.Errorf("the TV client ended with %v, want ErrExpired", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the TV client did not stop within 10s of the expiry")
	}
}

func TestQRCodeImages(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	get := func(path string) response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, sys.URL+path, nil)
		return sys.do(req)
	}

	pngResp := get(edge.PathQRPNG + "?size=300&user_code=" + url.QueryEscape(strings.ToLower(da.UserCode)))
	if pngResp.StatusCode != http.StatusOK {
		t.Fatalf("PNG: status %d, want 200: %s", pngResp.StatusCode, pngResp.Body)
	}
	if ct := pngResp.Header.Get("Content-Type"); ct != "image/png" {
		t.Errorf("PNG: Content-Type %q, want image/png", ct)
	}
	img, err := png.Decode(bytes.NewReader(pngResp.Body))
	if err != nil {
		t.Fatalf("PNG does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 300 || b.Dy() != 300 {
		t.Errorf("PNG is %dx%d, want 300x300", b.Dx(), b.Dy())
	}

	svgResp := get(edge.PathQRSVG + "?user_code=" + url.QueryEscape(da.UserCode))
	if svgResp.StatusCode != http.StatusOK {
		t.Fatalf("SVG: status %d, want 200: %s", svgResp.StatusCode, svgResp.Body)
	}
	if ct := svgResp.Header.Get("Content-Type"); ct != "image/svg+xml" {
		t.Errorf("SVG: Content-Type %q, want image/svg+xml", ct)
	}
	if !bytes.HasPrefix(svgResp.Body, []byte("<svg ")) || bytes.Contains(svgResp.Body, []byte("<script")) {
		t.Errorf("SVG is not a plain SVG image:\n%s", svgResp.Body)
	}
	// Drawing is deterministic, so the same SVG drawn here from the
	// response's verification_uri_complete shows the image encodes it.
	want, err := qr.SVG(da.VerificationURIComplete)
	if err != nil {
		t.Fatalf("draw the expected SVG: %v", err)
	}
	if !bytes.Equal(svgResp.Body, want) {
		t.Errorf("the SVG does not encode verification_uri_complete %q", da.VerificationURIComplete)
	}
	for _, resp := range []response{pngResp, svgResp} {
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", cc)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("Content-Security-Policy %q, want default-src 'none'", csp)
		}
	}

	for _, bad := range []string{
		edge.PathQRPNG,
		edge.PathQRPNG + "?user_code=AEIO-U123",
		edge.PathQRPNG + "?user_code=" + url.QueryEscape(da.UserCode) + "&size=5000",
		edge.PathQRPNG + "?user_code=" + url.QueryEscape(da.UserCode) + "&size=big",
		edge.PathQRSVG + "?user_code=" + url.QueryEscape("https://evil.example/"),
	} {
		if resp := get(bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400", bad, resp.StatusCode)
		}
	}
}
