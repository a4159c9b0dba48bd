package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/oauth"
)

// TestPublicClientBasicProbe checks the answer to golang.org/x/oauth2's
// first attempt, HTTP Basic with an empty secret plus client_id in the body:
// invalid_client, without counting as a poll, so the retry that follows is
// not slowed down.
func TestPublicClientBasicProbe(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	form := url.Values{"grant_type": {oauth.GrantTypeDeviceCode}, "client_id": {devstack.DemoClientID}, "device_code": {da.DeviceCode}}

	probe := sys.postForm(edge.PathToken, form, http.Header{"Authorization": {"Basic dHYtYXBwOg=="}})
	assertOAuthError(t, probe, http.StatusUnauthorized, oauth.CodeInvalidClient)

	retry := sys.postForm(edge.PathToken, form, nil)
	assertOAuthError(t, retry, http.StatusBadRequest, oauth.CodeAuthorizationPending)

	// A header alone identifies a public client too.
	headerOnly := url.Values{"grant_type": {oauth.GrantTypeDeviceCode}, "device_code": {da.DeviceCode}}
	sys.clock.Advance(2 * time.Second)
	resp := sys.postForm(edge.PathToken, headerOnly, http.Header{"Authorization": {"Basic dHYtYXBwOg=="}})
	assertOAuthError(t, resp, http.StatusBadRequest, oauth.CodeAuthorizationPending)
}

// TestNATSFaultIsServerError stops the NATS server under a running edge: a
// poll then fails as server_error, never as access_denied or slow_down.
func TestNATSFaultIsServerError(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	sys.stack.Server.Shutdown()
	sys.stack.Server.WaitForShutdown()

	resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 0)
	assertOAuthError(t, resp, http.StatusInternalServerError, oauth.CodeServerError)
	if strings.Contains(string(resp.Body), "nats") || strings.Contains(string(resp.Body), "kv:") {
		t.Errorf("error response leaks internals: %s", resp.Body)
	}
}

// TestRedeliveredEventsChangeNothing publishes the decision and the grant
// event again after the token was issued, as JetStream would redeliver them
// after a worker crashed before acknowledging, and checks that the code
// record and the grant stay as they were.
func TestRedeliveredEventsChangeNothing(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	sys.decide(da, "approve")
	sys.waitForState(da.DeviceCode, events.StateIssued)

	id := sys.codeID(da.DeviceCode)
	bucket := sys.codeBucket()
	before, revBefore, err := bucket.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("read code: %v", err)
	}

	js, _ := jetstream.New(sys.conn())
	decision, _ := events.Encode(events.Decision{CodeID: id, Approved: true, AccountID: before.AccountID, Username: before.Username, DecidedAt: time.Now()})
	grant, _ := events.Encode(events.GrantApproved{CodeID: id, ClientID: before.ClientID, AccountID: before.AccountID})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, events.Subject(events.SubjectDecision, id), decision); err != nil {
		t.Fatalf("publish decision: %v", err)
	}
	if _, err := js.Publish(ctx, events.Subject(events.SubjectGrantApproved, id), grant); err != nil {
		t.Fatalf("publish grant: %v", err)
	}

	// Both consumers must have processed the copies before the check.
	for _, durable := range []string{events.ConsumerApprover, events.ConsumerIssuer} {
		waitFor(t, 5*time.Second, durable+" to acknowledge everything", func() bool {
			info, err := js.Consumer(ctx, events.StreamDevice, durable)
			if err != nil {
				return false
			}
			cinfo, err := info.Info(ctx)
			return err == nil && cinfo.NumPending == 0 && cinfo.NumAckPending == 0
		})
	}

	after, revAfter, err := bucket.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("read code: %v", err)
	}
	if revAfter != revBefore {
		t.Errorf("code record revision moved from %d to %d after redelivery", revBefore, revAfter)
	}
	if string(after.SealedToken) != string(before.SealedToken) {
		t.Error("a redelivered grant event minted another token")
	}

	if resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 0); resp.StatusCode != http.StatusOK {
		t.Errorf("poll after redelivery: status %d: %s", resp.StatusCode, resp.Body)
	}
}

func TestMetadataAndJWKS(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)

	resp := sys.do(mustRequest(t, http.MethodGet, sys.URL+edge.PathMetadata))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metadata: status %d", resp.StatusCode)
	}
	md := resp.json(t)
	for name, want := range map[string]string{
		"issuer":                        sys.URL,
		"token_endpoint":                sys.URL + edge.PathToken,
		"device_authorization_endpoint": sys.URL + edge.PathDeviceAuthorization,
		"jwks_uri":                      sys.URL + edge.PathJWKS,
	} {
		if md[name] != want {
			t.Errorf("metadata %s = %v, want %s", name, md[name], want)
		}
	}
	grants, _ := md["grant_types_supported"].([]any)
	if len(grants) != 2 || grants[0] != oauth.GrantTypeDeviceCode || grants[1] != oauth.GrantTypeRefreshToken {
		t.Errorf("grant_types_supported %v, want the device code and refresh token grants", grants)
	}
	scopes, _ := md["scopes_supported"].([]any)
	if len(scopes) != 2 || scopes[0] != "offline_access" || scopes[1] != "profile" {
		t.Errorf("scopes_supported %v, want the scopes the seeded clients allow", scopes)
	}
	for _, name := range []string{"revocation_endpoint", "introspection_endpoint"} {
		if md[name] == nil {
			t.Errorf("metadata has no %s", name)
		}
	}

	waitFor(t, 5*time.Second, "the issuer to publish its key", func() bool {
		keys, _ := sys.do(mustRequest(t, http.MethodGet, sys.URL+edge.PathJWKS)).json(t)["keys"].([]any)
		return len(keys) == 1
	})
}

func mustRequest(t *testing.T, method, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, target, nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	return req
}

// TestLateApproverHonoursTimelyApproval delivers a decision made before the
// code expired to the approver after it expired, as happens when the
// approver was down: the device still gets its token.
func TestLateApproverHonoursTimelyApproval(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	id := sys.codeID(da.DeviceCode)
	rec, _, err := sys.codeBucket().Get(t.Context(), id)
	if err != nil {
		t.Fatalf("read code: %v", err)
	}

	sys.clock.Advance(time.Duration(da.ExpiresIn+30) * time.Second)
	js, _ := jetstream.New(sys.conn())
	decision, _ := events.Encode(events.Decision{CodeID: id, Approved: true, AccountID: "acct_late", Username: "late",
		DecidedAt: rec.CreatedAt.Add(time.Minute)})
	if _, err := js.Publish(t.Context(), events.Subject(events.SubjectDecision, id), decision); err != nil {
		t.Fatalf("publish decision: %v", err)
	}
	sys.waitForState(da.DeviceCode, events.StateIssued)

	if resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 0); resp.StatusCode != http.StatusOK {
		t.Errorf("poll: status %d, want the token: %s", resp.StatusCode, resp.Body)
	}

	// A decision made after expiry is ignored.
	late := sys.authorize(devstack.DemoClientID, "profile")
	lateID := sys.codeID(late.DeviceCode)
	lateRec, _, _ := sys.codeBucket().Get(t.Context(), lateID)
	decision, _ = events.Encode(events.Decision{CodeID: lateID, Approved: true, AccountID: "acct_late", Username: "late",
		DecidedAt: lateRec.ExpiresAt.Add(time.Second)})
	if _, err := js.Publish(t.Context(), events.Subject(events.SubjectDecision, lateID), decision); err != nil {
		t.Fatalf("publish decision: %v", err)
	}
	waitFor(t, 5*time.Second, "the approver to consume the late decision", func() bool {
		info, err := js.Consumer(t.Context(), events.StreamDevice, events.ConsumerApprover)
		if err != nil {
			return false
		}
		ci, err := info.Info(t.Context())
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})
	if rec, _, _ := sys.codeBucket().Get(t.Context(), lateID); rec.State != events.StatePending {
		t.Errorf("decision made after expiry moved the code to %s", rec.State)
	}
}
