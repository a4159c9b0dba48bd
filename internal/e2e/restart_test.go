package e2e

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/oauth"
)

// TestRestartKeepsEverything stops every service and the NATS server with
// codes in every stage, one approval stranded in the middle of issuing and
// a device holding a poll, then starts them again on the same store: every
// code, approval and grant is still there and every device gets its token.
func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()

	// The issuer pauses in the middle of one issue, after minting and
	// before storing, until NATS is gone, so that approval is stranded.
	var strandNext atomic.Bool
	stranded := make(chan struct{})
	release := make(chan struct{})
	pauseIssuer := func(c *devstack.Config) {
		c.Issuer.BeforeStore = func(string) {
			if strandNext.CompareAndSwap(true, false) {
				close(stranded)
				<-release
			}
		}
	}
	shortAckWait := func(c *devstack.Config) { c.Issuer.Worker.AckWait = 2 * time.Second }
	first := startSystem(t, pauseIssuer, shortAckWait)

	waiting := first.authorize(devstack.DemoClientID, "profile")
	collect := first.authorize(devstack.DemoClientID, "profile")
	first.decide(collect, "approve")
	first.waitForState(collect.DeviceCode, events.StateIssued)
	redeemed := first.authorize(devstack.DemoClientID, "profile offline_access")
	first.decide(redeemed, "approve")
	first.waitForState(redeemed.DeviceCode, events.StateIssued)
	delivered := first.poll(devstack.DemoClientID, redeemed.DeviceCode, 0)
	if delivered.StatusCode != http.StatusOK {
		t.Fatalf("redeem before the restart: status %d: %s", delivered.StatusCode, delivered.Body)
	}
	grantBefore := first.grantOf(redeemed.DeviceCode)

	strandNext.Store(true)
	approvedOnly := first.authorize(devstack.DemoClientID, "profile")
	first.decide(approvedOnly, "approve")
	<-stranded
	first.waitForState(approvedOnly.DeviceCode, events.StateApproved)

	held := first.pollInBackground(first.URL, devstack.DemoClientID, waiting.DeviceCode, 20*time.Second)
	first.waitForPoll(waiting.DeviceCode)

	// Stop NATS under the paused issuer, so its store fails, then stop
	// everything else; the stopping edge answers the held poll first.
	first.stack.Server.Shutdown()
	close(release)
	first.stack.Edge.Close()
	assertOAuthError(t, <-held, http.StatusBadRequest, oauth.CodeAuthorizationPending)
	first.stop()

	second := startSystem(t, withDataDir(first.dataDir), shortAckWait)
	codes := second.codeBucket()
	for _, c := range []struct {
		name  string
		code  string
		state events.CodeState
	}{
		{"waiting code", waiting.DeviceCode, events.StatePending},
		{"code redeemed before the stop", redeemed.DeviceCode, events.StateRedeemed},
	} {
		rec, _, err := codes.Get(t.Context(), second.codeID(c.code))
		if err != nil {
			t.Fatalf("%s after the restart: %v", c.name, err)
		}
		if rec.State != c.state {
			t.Errorf("%s is %s after the restart, want %s", c.name, rec.State, c.state)
		}
	}
	if grantAfter := second.grantOf(redeemed.DeviceCode); grantAfter.AccessTokenID != grantBefore.AccessTokenID {
		t.Errorf("grant names jti %s after the restart, want %s", grantAfter.AccessTokenID, grantBefore.AccessTokenID)
	}

	// The issued token waited in storage; the stranded approval is
	// redelivered to the new issuer.
	for _, c := range []struct {
		name string
		da   oauth.DeviceAuthorizationResponse
	}{
		{"token issued before the stop", collect},
		{"approval stranded by the stop", approvedOnly},
	} {
		resp := second.poll(devstack.DemoClientID, c.da.DeviceCode, 15*time.Second)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d after the restart, want 200: %s", c.name, resp.StatusCode, resp.Body)
			continue
		}
		assertTokenMatchesGrant(t, second, c.da.DeviceCode, resp)
	}

	// The device that was waiting polls again and the person approves now.
	waiting.VerificationURIComplete = strings.Replace(waiting.VerificationURIComplete, first.URL, second.URL, 1)
	answer := second.pollInBackground(second.URL, devstack.DemoClientID, waiting.DeviceCode, 15*time.Second)
	second.waitForPoll(waiting.DeviceCode)
	second.decide(waiting, "approve")
	resp := <-answer
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("waiting device after the restart: status %d, want 200: %s", resp.StatusCode, resp.Body)
	}
	assertTokenMatchesGrant(t, second, waiting.DeviceCode, resp)
}

// assertTokenMatchesGrant checks that the access token in resp is the one
// the code's grant records.
func assertTokenMatchesGrant(t *testing.T, sys *system, deviceCode string, resp response) {
	t.Helper()
	raw, _ := resp.json(t)["access_token"].(string)
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err != nil {
		t.Fatalf("parse access token: %v", err)
	}
	var grant events.Grant
	waitFor(t, 5*time.Second, "the grant to be stored", func() bool {
		grant = sys.grantOf(deviceCode)
		return grant.AccessTokenID != ""
	})
	if claims["jti"] != grant.AccessTokenID {
		t.Errorf("token jti %v, grant records %s", claims["jti"], grant.AccessTokenID)
	}
}
