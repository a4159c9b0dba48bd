package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

var grantField = regexp.MustCompile(`name="grant_id" value="([^"]+)"`)

// connectDevice approves a new code for the demo account and redeems it,
// as a TV does, and returns the token response.
func (s *system) connectDevice(scope string) map[string]any {
	s.t.Helper()
	da := s.authorize(devstack.DemoClientID, scope)
	s.decide(da, "approve")
	s.waitForState(da.DeviceCode, events.StateIssued)
	resp := s.poll(devstack.DemoClientID, da.DeviceCode, 0)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("redeem the approved code: status %d: %s", resp.StatusCode, resp.Body)
	}
	var body map[string]any
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		s.t.Fatalf("decode the token response: %v", err)
	}
	return body
}

// bucket opens a KV bucket of the system for the test.
func bucketOf[T any](s *system, name string) *kv.Bucket[T] {
	s.t.Helper()
	js, _ := jetstream.New(s.conn())
	b, err := js.KeyValue(s.t.Context(), name)
	if err != nil {
		s.t.Fatalf("open bucket %s: %v", name, err)
	}
	return kv.New[T](b)
}

// onlyGrant returns the one grant stored and its key.
func (s *system) onlyGrant() (string, events.Grant) {
	s.t.Helper()
	grants := bucketOf[events.Grant](s, events.BucketGrants)
	keys, err := grants.Keys(s.t.Context(), ">")
	if err != nil || len(keys) != 1 {
		s.t.Fatalf("list grants: %d keys, error %v; want one grant", len(keys), err)
	}
	grant, _, err := grants.Get(s.t.Context(), keys[0])
	if err != nil {
		s.t.Fatalf("read grant: %v", err)
	}
	return keys[0], grant
}

func TestDevicesListAndRevoke(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	tokens := sys.connectDevice("profile offline_access")
	key, grant := sys.onlyGrant()
	if grant.RefreshTokenID == "" {
		t.Fatal("the grant has no refresh token, although offline_access was granted")
	}
	refresh := bucketOf[events.RefreshToken](sys, events.BucketRefreshTokens)
	if _, _, err := refresh.Get(t.Context(), grant.RefreshTokenID); err != nil {
		t.Fatalf("the refresh token record is missing before revocation: %v", err)
	}

	ph := sys.newPhone()
	list := ph.signIn(devstack.DemoUsername, devstack.DemoPassword)
	if list.title() != "Your devices" {
		t.Fatalf("after sign-in got %q (status %d), want the devices page", list.title(), list.Status)
	}
	for _, want := range []string{"StreamCo TV", "Command-line app", "See your profile name", "Stay signed in", "Not since it was connected"} {
		if !strings.Contains(list.Body, want) {
			t.Errorf("devices page does not show %q", want)
		}
	}
	m := grantField.FindStringSubmatch(list.Body)
	if m == nil || m[1] != grant.ID {
		t.Fatalf("devices page offers no removal of grant %s", grant.ID)
	}

	// A removal without the form's CSRF token changes nothing.
	ph.post(edge.PathRevokeDevice, url.Values{"grant_id": {grant.ID}})
	if _, g := sys.onlyGrant(); !g.RevokedAt.IsZero() {
		t.Fatal("a removal without a CSRF token revoked the grant")
	}

	removed := ph.post(edge.PathRevokeDevice, url.Values{"csrf_token": {list.csrf(t)}, "grant_id": {grant.ID}})
	if removed.title() != "Your devices" || !strings.Contains(removed.Body, "StreamCo TV was removed") {
		t.Errorf("after removal got %q (status %d) without the removal notice", removed.title(), removed.Status)
	}
	if grantField.MatchString(removed.Body) || !strings.Contains(removed.Body, "No devices are connected") {
		t.Error("the removed device is still listed")
	}

	_, revoked := sys.onlyGrant()
	if revoked.RevokedAt.IsZero() {
		t.Error("the grant is not marked revoked")
	}
	if _, _, err := refresh.Get(t.Context(), grant.RefreshTokenID); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("the refresh token record is still stored after revocation (error %v)", err)
	}
	refused := sys.refresh(devstack.DemoClientID, tokens["refresh_token"].(string), "")
	assertOAuthError(t, refused, http.StatusBadRequest, oauth.CodeInvalidGrant)

	js, _ := jetstream.New(sys.conn())
	stream, err := js.Stream(t.Context(), events.StreamDevice)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(t.Context(), events.Subject(events.SubjectGrantRevoked, grant.ID))
	if err != nil {
		t.Fatalf("no GrantRevoked event: %v", err)
	}
	var ev events.GrantRevoked
	if err := events.Decode(msg.Data, &ev); err != nil {
		t.Fatalf("decode GrantRevoked: %v", err)
	}
	if ev.GrantID != grant.ID || ev.AccountID != grant.AccountID || ev.Reason != "user" || ev.RevokedAt.IsZero() {
		t.Errorf("GrantRevoked event %+v does not describe the revocation of %s by its owner", ev, key)
	}
}

func TestDevicesOfAnotherAccount(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	sys.connectDevice("profile")
	_, grant := sys.onlyGrant()

	store := accounts.NewStore(bucketOf[events.Account](sys, events.BucketAccounts), bcrypt.MinCost)
	if _, err := store.Create(t.Context(), "mallory", "secret"); err != nil {
		t.Fatalf("create a second account: %v", err)
	}
	ph := sys.newPhone()
	list := ph.signIn("mallory", "secret")
	if strings.Contains(list.Body, "StreamCo TV") {
		t.Error("another account's devices page lists the demo account's device")
	}
	// The empty devices page has no form, but the code page carries the
	// same browser's CSRF token.
	token := ph.get(sys.URL + edge.PathDevice).csrf(t)
	ph.post(edge.PathRevokeDevice, url.Values{"csrf_token": {token}, "grant_id": {grant.ID}})
	if _, g := sys.onlyGrant(); !g.RevokedAt.IsZero() {
		t.Error("another account revoked the demo account's grant")
	}
}
