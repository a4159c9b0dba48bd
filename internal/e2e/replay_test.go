package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// TestLostResponseReplayedInWindow plays a device whose token response was
// lost: it polls again within the replay window and gets the identical
// response; after the window the code is invalid_grant and the grant is
// revoked with its refresh token.
func TestLostResponseReplayedInWindow(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withReplayWindow(10*time.Second))
	da := sys.authorize(devstack.DemoClientID, "profile offline_access")
	sys.decide(da, "approve")
	sys.waitForState(da.DeviceCode, events.StateIssued)

	first := sys.poll(devstack.DemoClientID, da.DeviceCode, 0)
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first redemption: status %d, want 200: %s", first.StatusCode, first.Body)
	}

	sys.clock.Advance(5 * time.Second)
	again := sys.poll(devstack.DemoClientID, da.DeviceCode, 0)
	if again.StatusCode != http.StatusOK {
		t.Fatalf("poll within the window: status %d, want 200: %s", again.StatusCode, again.Body)
	}
	if !bytes.Equal(again.Body, first.Body) {
		t.Errorf("poll within the window got\n%s\nwant the identical response\n%s", again.Body, first.Body)
	}
	if again.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("replayed response Cache-Control %q, want no-store", again.Header.Get("Cache-Control"))
	}

	assertOAuthError(t, sys.poll(otherClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeInvalidGrant)

	grant := sys.grantOf(da.DeviceCode)
	if !grant.RevokedAt.IsZero() {
		t.Fatalf("grant revoked at %s by a replay within the window or by another client", grant.RevokedAt)
	}
	if grant.RefreshTokenID == "" {
		t.Fatal("grant has no refresh token; the test asked for offline_access")
	}
	refresh := sys.refreshBucket()
	if _, _, err := refresh.Get(t.Context(), grant.RefreshTokenID); err != nil {
		t.Fatalf("refresh token record before the replay: %v", err)
	}

	sys.clock.Advance(6 * time.Second)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeInvalidGrant)

	grant = sys.grantOf(da.DeviceCode)
	if grant.RevokedAt.IsZero() {
		t.Error("grant not revoked after a replay past the window")
	}
	if _, _, err := refresh.Get(t.Context(), grant.RefreshTokenID); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("refresh token record after the revocation: err %v, want not found", err)
	}
	revoked := sys.lastEvent(events.Subject(events.SubjectGrantRevoked, grant.ID))
	var ev events.GrantRevoked
	if err := events.Decode(revoked, &ev); err != nil {
		t.Fatalf("decode revocation event: %v", err)
	}
	if ev.Reason != events.RevokeReasonReplay || ev.GrantID != grant.ID {
		t.Errorf("revocation event %+v, want reason %q for grant %s", ev, events.RevokeReasonReplay, grant.ID)
	}

	// Later presentations stay rejected and change nothing.
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeInvalidGrant)
	if again := sys.grantOf(da.DeviceCode); !again.RevokedAt.Equal(grant.RevokedAt) {
		t.Errorf("revocation time moved from %s to %s", grant.RevokedAt, again.RevokedAt)
	}
}

// grantOf reads the grant issued for deviceCode.
func (s *system) grantOf(deviceCode string) events.Grant {
	s.t.Helper()
	rec, _, err := s.codeBucket().Get(s.t.Context(), s.codeID(deviceCode))
	if err != nil {
		s.t.Fatalf("read code record: %v", err)
	}
	js, _ := jetstream.New(s.conn())
	bucket, err := js.KeyValue(s.t.Context(), events.BucketGrants)
	if err != nil {
		s.t.Fatalf("open grants bucket: %v", err)
	}
	grant, _, err := kv.New[events.Grant](bucket).Get(s.t.Context(), events.GrantKey(rec.AccountID, rec.GrantID))
	if err != nil {
		s.t.Fatalf("read grant %s: %v", rec.GrantID, err)
	}
	return grant
}

func (s *system) refreshBucket() *kv.Bucket[events.RefreshToken] {
	s.t.Helper()
	js, _ := jetstream.New(s.conn())
	bucket, err := js.KeyValue(s.t.Context(), events.BucketRefreshTokens)
	if err != nil {
		s.t.Fatalf("open refresh token bucket: %v", err)
	}
	return kv.New[events.RefreshToken](bucket)
}

// lastEvent returns the data of the last event stored on subject.
func (s *system) lastEvent(subject string) []byte {
	s.t.Helper()
	js, _ := jetstream.New(s.conn())
	ctx, cancel := context.WithTimeout(s.t.Context(), 5*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, events.StreamDevice)
	if err != nil {
		s.t.Fatalf("open stream: %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		s.t.Fatalf("no event on %s: %v", subject, err)
	}
	return msg.Data
}
