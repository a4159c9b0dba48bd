package edge

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/clients"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// deviceAuthorization handles the device authorization request of RFC 8628
// section 3.1: it stores a new pending code, announces it, and returns the
// codes and where to use them.
func (e *Edge) deviceAuthorization(w http.ResponseWriter, r *http.Request) error {
	form, client, err := e.parseClientRequest(w, r)
	if err != nil {
		return err
	}
	if client.DeviceFlowDisabled || !clients.AllowsGrant(client, oauth.GrantTypeDeviceCode) {
		return oauth.ErrUnauthorizedClient.WithDescription("This client may not use the device authorization grant.")
	}

	scopes, err := parseScope(form.Get("scope"))
	if err != nil {
		return err
	}
	if len(scopes) == 0 {
		// RFC 6749 section 3.3 lets the server apply a default: everything
		// the client is allowed.
		scopes = client.Scopes
	}
	if !clients.AllowsScopes(client, scopes) {
		return oauth.ErrInvalidScope.WithDescription("The client may not request scope %q.", firstDisallowed(client, scopes))
	}

	now := e.cfg.Now()
	lifetime := e.cfg.CodeLifetime
	if client.CodeLifetimeSeconds > 0 {
		lifetime = time.Duration(client.CodeLifetimeSeconds) * time.Second
	}
	interval := e.cfg.PollInterval
	if client.IntervalSeconds > 0 {
		interval = time.Duration(client.IntervalSeconds) * time.Second
	}

	deviceCode, err := codes.NewDeviceCode(e.cfg.Random)
	if err != nil {
		return err
	}
	sealKey, err := codes.SealKey(deviceCode)
	if err != nil {
		return err
	}
	codeID := e.hasher.CodeID(deviceCode)
	rec := events.CodeRecord{
		State:           events.StatePending,
		ClientID:        client.ID,
		Scopes:          scopes,
		CreatedAt:       now,
		ExpiresAt:       now.Add(lifetime),
		IntervalSeconds: int(interval / time.Second),
		DeviceKind:      deviceKind(r.UserAgent()),
		RequestedFrom:   addressNetwork(r.RemoteAddr),
		SealKey:         sealKey,
	}
	if _, err := e.codes.Create(r.Context(), codeID, rec); err != nil {
		return err
	}

	userCode, err := e.reserveUserCode(r, codeID)
	if err != nil {
		// A code without a user code can never be approved, so it is deleted
		// now rather than at the bucket's expiry.
		if deleteErr := e.codes.Delete(r.Context(), codeID); deleteErr != nil {
			zerolog.Ctx(r.Context()).Warn().Err(deleteErr).Str("code_id", codes.LogID(codeID)).Msg("deleting a code without a user code failed")
		}
		return err
	}

	announced, err := events.Encode(events.CodeRequested{
		CodeID: codeID, ClientID: client.ID, Scopes: scopes, RequestedAt: now, ExpiresAt: rec.ExpiresAt,
	})
	if err != nil {
		return err
	}
	if _, err := e.js.Publish(r.Context(), events.Subject(events.SubjectCodeRequested, codeID), announced,
		jetstream.WithMsgID("requested-"+codeID)); err != nil {
		return oauth.ErrServerError.WithCause(err)
	}

	zerolog.Ctx(r.Context()).Info().Str("client_id", client.ID).Str("code_id", codes.LogID(codeID)).
		Strs("scopes", scopes).Msg("device authorization created")

	formatted := codes.FormatUserCode(userCode)
	oauth.WriteJSON(w, http.StatusOK, oauth.DeviceAuthorizationResponse{
		DeviceCode:              deviceCode,
		UserCode:                formatted,
		VerificationURI:         e.url(PathDevice),
		VerificationURIComplete: e.verificationURIComplete(userCode),
		ExpiresIn:               int(lifetime / time.Second),
		Interval:                int(interval / time.Second),
	})
	return nil
}

// reserveUserCode picks a user code no live code uses and maps it to codeID.
// Create fails on a taken code, so two edges can never hand out the same one.
func (e *Edge) reserveUserCode(r *http.Request, codeID string) (string, error) {
	for range 5 {
		userCode, err := codes.NewUserCode(e.cfg.Random)
		if err != nil {
			return "", err
		}
		_, err = e.userCodes.Create(r.Context(), e.hasher.UserCodeID(userCode), codeID)
		if errors.Is(err, kv.ErrExists) {
			continue
		}
		if err != nil {
			return "", err
		}
		return userCode, nil
	}
	return "", errors.New("edge: five user codes in a row were taken; the code space is nearly full")
}

func firstDisallowed(client events.Client, scopes []string) string {
	for _, s := range scopes {
		if !clients.AllowsScopes(client, []string{s}) {
			return s
		}
	}
	return ""
}

// deviceKind guesses the kind of device from its User-Agent, for the consent
// page. It is a hint for the person, not a security decision.
func deviceKind(userAgent string) string {
	ua := strings.ToLower(userAgent)
	switch {
	case ua == "":
		return "Unknown device"
	case containsAny(ua, "smart-tv", "smarttv", "tizen", "webos", "appletv", "apple tv", "android tv", "bravia", "roku", "firetv", "hbbtv", "crkey"):
		return "Smart TV"
	case containsAny(ua, "playstation", "xbox", "nintendo"):
		return "Game console"
	case containsAny(ua, "iphone", "android", "mobile"):
		return "Phone"
	case containsAny(ua, "go-http-client", "curl", "wget", "python", "httpie"):
		return "Command-line app"
	default:
		return "Device"
	}
}

func containsAny(s string, parts ...string) bool {
	for _, p := range parts {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// addressNetwork returns the /24 (IPv4) or /48 (IPv6) network of a remote
// address: enough for a person to recognise a request from far away, too
// coarse to locate anyone.
//
// NOTE: this is the address of the TCP peer. Behind a load balancer it is
// the balancer's, until the edge is taught which forwarding header to trust.
func addressNetwork(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	bits := 48
	if addr.Unmap().Is4() {
		addr = addr.Unmap()
		bits = 24
	}
	prefix, err := addr.Prefix(bits)
	if err != nil {
		return ""
	}
	return prefix.String()
}
