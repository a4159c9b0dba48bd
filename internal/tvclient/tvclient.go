// Package tvclient is the reference TV client: it requests codes, shows the
// QR code and the user code, waits for the person to approve on a phone with
// held polls, and reports who it is signed in as. The protocol is entirely
// golang.org/x/oauth2; the only additions are the metadata lookup of
// RFC 8414 and the "Prefer: wait" header that lets the server hold a poll.
package tvclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/streamco/deviceauth/internal/qr"
)

// metadataPath is the path of the server metadata document (RFC 8414 section 3).
const metadataPath = "/.well-known/oauth-authorization-server"

// Config configures one sign-in.
type Config struct {
	// Server is the base URL of the authorization server, whose metadata
	// names the endpoints.
	Server   string
	ClientID string
	Scopes   []string
	// Hold is the wait requested with "Prefer: wait" on each token poll.
	// The server caps it. Zero requests no hold, so polls return at once.
	Hold time.Duration
	// DarkBackground draws the QR code for light text on a dark terminal.
	DarkBackground bool
	// Out receives what the TV shows.
	Out io.Writer
	// UserAgent is sent on every request. The server derives the device
	// kind on the consent page from it, so a TV app should identify itself
	// as a TV.
	UserAgent string
	// Transport sends the requests. Nil means http.DefaultTransport.
	Transport http.RoundTripper
}

// Identity is who the device is signed in as, read from the access token.
type Identity struct {
	Subject  string
	Username string
	Scope    string
}

// Errors a sign-in can end with, besides transport failures.
var (
	ErrDenied  = errors.New("tvclient: the request was denied on the phone")
	ErrExpired = errors.New("tvclient: the code expired before anyone approved it")
)

// SignIn runs the device flow until the person approves or denies on the
// phone, the code expires, or ctx ends. It returns the token and the
// identity in it.
func SignIn(ctx context.Context, cfg Config) (*oauth2.Token, Identity, error) {
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	if cfg.UserAgent != "" {
		base = userAgent{base: base, value: cfg.UserAgent}
	}
	endpoint, err := discover(ctx, &http.Client{Transport: base}, cfg.Server)
	if err != nil {
		return nil, Identity{}, err
	}
	client := &http.Client{Transport: preferWait{base: base, hold: cfg.Hold, tokenURL: endpoint.TokenURL}}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	conf := &oauth2.Config{ClientID: cfg.ClientID, Scopes: cfg.Scopes, Endpoint: endpoint}

	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("tvclient: request codes: %w", err)
	}
	if err := show(cfg.Out, da, cfg.DarkBackground); err != nil {
		return nil, Identity{}, err
	}

	tok, err := conf.DeviceAccessToken(ctx, da)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		switch re.ErrorCode {
		case "access_denied":
			return nil, Identity{}, ErrDenied
		case "expired_token":
			return nil, Identity{}, ErrExpired
		}
	}
	if err != nil {
		return nil, Identity{}, fmt.Errorf("tvclient: wait for the token: %w", err)
	}

	id, err := identityOf(tok)
	if err != nil {
		return nil, Identity{}, err
	}
	name := id.Username
	if name == "" {
		name = id.Subject
	}
	fmt.Fprintf(cfg.Out, "\nSigned in as %s (account %s, scope %q).\n", name, id.Subject, id.Scope)
	return tok, id, nil
}

// show draws what the TV screen shows: the QR code of the complete address,
// and the address and code for typing.
func show(out io.Writer, da *oauth2.DeviceAuthResponse, darkBackground bool) error {
	link := da.VerificationURIComplete
	if link == "" {
		link = da.VerificationURI
	}
	code, err := qr.Terminal(link, darkBackground)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\nScan the code with your phone, or open\n  %s\nand enter the code\n  %s\n\nOpen directly: %s\nThe code expires at %s. Waiting for approval…\n",
		code, da.VerificationURI, da.UserCode, link, da.Expiry.Format(time.Kitchen))
	return err
}

// discover reads the endpoints from the server's metadata (RFC 8414).
func discover(ctx context.Context, client *http.Client, server string) (oauth2.Endpoint, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+metadataPath, nil)
	if err != nil {
		return oauth2.Endpoint{}, fmt.Errorf("tvclient: invalid server URL %q: %w", server, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return oauth2.Endpoint{}, fmt.Errorf("tvclient: read server metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return oauth2.Endpoint{}, fmt.Errorf("tvclient: read server metadata: status %d from %s", resp.StatusCode, req.URL)
	}

	var md struct {
		TokenEndpoint               string `json:"token_endpoint"`
		DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&md); err != nil {
		return oauth2.Endpoint{}, fmt.Errorf("tvclient: decode server metadata: %w", err)
	}
	if md.TokenEndpoint == "" || md.DeviceAuthorizationEndpoint == "" {
		return oauth2.Endpoint{}, fmt.Errorf("tvclient: server metadata at %s names no token or device authorization endpoint", req.URL)
	}
	return oauth2.Endpoint{
		DeviceAuthURL: md.DeviceAuthorizationEndpoint,
		TokenURL:      md.TokenEndpoint,
		// A public client sends client_id in the body and never tries
		// HTTP Basic first.
		AuthStyle: oauth2.AuthStyleInParams,
	}, nil
}

// identityOf reads the subject and username from the access token's claims.
// It does not verify the signature: the token came straight from the token
// endpoint over the connection the client chose, and the TV only displays
// the name. Resource servers verify the token with the published keys.
func identityOf(tok *oauth2.Token) (Identity, error) {
	parts := strings.Split(tok.AccessToken, ".")
	if len(parts) != 3 {
		return Identity{}, errors.New("tvclient: the access token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Identity{}, fmt.Errorf("tvclient: decode the access token: %w", err)
	}
	var claims struct {
		Subject  string `json:"sub"`
		Username string `json:"preferred_username"`
		Scope    string `json:"scope"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return Identity{}, fmt.Errorf("tvclient: decode the access token claims: %w", err)
	}
	if claims.Subject == "" {
		return Identity{}, errors.New("tvclient: the access token has no subject")
	}
	return Identity(claims), nil
}

// preferWait adds "Prefer: wait=N" (RFC 7240) to requests to the token
// endpoint.
type preferWait struct {
	base     http.RoundTripper
	hold     time.Duration
	tokenURL string
}

func (p preferWait) RoundTrip(req *http.Request) (*http.Response, error) {
	if p.hold < time.Second || req.URL.String() != p.tokenURL {
		return p.base.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Prefer", "wait="+strconv.Itoa(int(p.hold/time.Second)))
	return p.base.RoundTrip(req)
}

// userAgent sets the User-Agent header of every request.
type userAgent struct {
	base  http.RoundTripper
	value string
}

func (u userAgent) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("User-Agent", u.value)
	return u.base.RoundTrip(req)
}
