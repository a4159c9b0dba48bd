package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/oauth"
)

// codeID returns the storage id of a device code, computed with the
// system's hash key as an edge would.
func (s *system) codeID(deviceCode string) string {
	s.t.Helper()
	key, err := keyfile.Read(filepath.Join(s.dataDir, "hash.key"))
	if err != nil {
		s.t.Fatalf("read hash key: %v", err)
	}
	hasher, err := codes.NewHasher(key)
	if err != nil {
		s.t.Fatalf("hasher: %v", err)
	}
	return hasher.CodeID(deviceCode)
}

// secondEdge starts another edge on the same NATS server and hash key, as
// an operator adds one behind the load balancer, and returns its URL.
func (s *system) secondEdge(opts ...func(*edge.Config)) string {
	s.t.Helper()
	key, err := keyfile.Read(filepath.Join(s.dataDir, "hash.key"))
	if err != nil {
		s.t.Fatalf("read hash key: %v", err)
	}
	cfg := edge.Config{
		PublicURL:    s.URL,
		HashKey:      key,
		PollInterval: time.Second,
		Limits:       s.limits,
		Now:          s.clock.Now,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	e, err := edge.New(s.conn(), cfg, zerolog.Nop())
	if err != nil {
		s.t.Fatalf("second edge: %v", err)
	}
	if err := e.Start(s.t.Context()); err != nil {
		s.t.Fatalf("start second edge: %v", err)
	}
	srv := httptest.NewServer(e.Handler())
	s.t.Cleanup(func() { e.Close(); srv.Close() })
	return srv.URL
}

// approve walks the phone pages and approves or denies da.
func (s *system) decide(da oauth.DeviceAuthorizationResponse, decision string) {
	s.t.Helper()
	result := s.newPhone().decide(da.VerificationURIComplete, decision)
	if result.Status != http.StatusOK {
		s.t.Fatalf("decision page status %d: %s", result.Status, result.title())
	}
}

// waitForState waits until the code record reaches state.
func (s *system) waitForState(deviceCode string, state events.CodeState) {
	s.t.Helper()
	bucket := s.codeBucket()
	id := s.codeID(deviceCode)
	waitFor(s.t, 5*time.Second, "code state "+string(state), func() bool {
		rec, _, err := bucket.Get(s.t.Context(), id)
		return err == nil && rec.State == state
	})
}

func assertOAuthError(t *testing.T, resp response, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (body %s)", resp.StatusCode, status, resp.Body)
	}
	if got := resp.errorCode(t); got != code {
		t.Errorf("error %q, want %q", got, code)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
}

func TestPollPendingThenDenied(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeAuthorizationPending)

	sys.decide(da, "deny")
	sys.waitForState(da.DeviceCode, events.StateDenied)
	sys.clock.Advance(2 * time.Second)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeAccessDenied)
}

func TestPollExpiredCode(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	if da.ExpiresIn != 600 {
		t.Errorf("expires_in %d, want 600", da.ExpiresIn)
	}

	sys.clock.Advance(601 * time.Second)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeExpiredToken)

	// The phone cannot approve it either.
	ph := sys.newPhone()
	confirm := ph.get(da.VerificationURIComplete)
	result := ph.post(edge.PathDevice, url.Values{"csrf_token": {confirm.csrf(t)}, "user_code": {da.UserCode}})
	if result.Status != http.StatusGone {
		t.Errorf("expired code on the phone: status %d, want 410", result.Status)
	}
	if !strings.Contains(result.Body, "expired") {
		t.Errorf("expired code on the phone: page %q does not say the code expired", result.title())
	}
}

func TestPollSlowDown(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	first := sys.poll(devstack.DemoClientID, da.DeviceCode, 0)
	assertOAuthError(t, first, http.StatusBadRequest, oauth.CodeAuthorizationPending)

	tooSoon := sys.poll(devstack.DemoClientID, da.DeviceCode, 0)
	assertOAuthError(t, tooSoon, http.StatusBadRequest, oauth.CodeSlowDown)

	rec, _, err := sys.codeBucket().Get(t.Context(), sys.codeID(da.DeviceCode))
	if err != nil {
		t.Fatalf("read code: %v", err)
	}
	if rec.IntervalSeconds != 6 {
		t.Errorf("stored interval %d after slow_down, want 1+5", rec.IntervalSeconds)
	}

	// The rejected poll did not move the clock: six seconds after the
	// first accepted poll, the next one is accepted.
	sys.clock.Advance(6 * time.Second)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeAuthorizationPending)

	// A poll a little early, within the jitter tolerance, is accepted.
	sys.clock.Advance(5800 * time.Millisecond)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeAuthorizationPending)
}

func TestSlowDownAcrossEdges(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	other := sys.secondEdge()
	da := sys.authorize(devstack.DemoClientID, "profile")

	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeAuthorizationPending)

	form := url.Values{"grant_type": {oauth.GrantTypeDeviceCode}, "client_id": {devstack.DemoClientID}, "device_code": {da.DeviceCode}}
	resp, err := http.PostForm(other+edge.PathToken, form)
	if err != nil {
		t.Fatalf("poll second edge: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if body["error"] != oauth.CodeSlowDown {
		t.Errorf("second edge answered %q, want slow_down for a poll that came too soon", body["error"])
	}
}

func TestDeviceCodeRedeemedOnce(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, withReplayWindow(-1))
	da := sys.authorize(devstack.DemoClientID, "profile")
	sys.decide(da, "approve")
	sys.waitForState(da.DeviceCode, events.StateIssued)

	first := sys.poll(devstack.DemoClientID, da.DeviceCode, 0)
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first redemption: status %d, want 200: %s", first.StatusCode, first.Body)
	}
	if first.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("token response Cache-Control %q, want no-store", first.Header.Get("Cache-Control"))
	}
	if tok, _ := first.json(t)["access_token"].(string); tok == "" {
		t.Error("first redemption has no access_token")
	}

	sys.clock.Advance(2 * time.Second)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeInvalidGrant)
}

func TestDeviceCodeOfAnotherClient(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	sys.decide(da, "approve")
	sys.waitForState(da.DeviceCode, events.StateIssued)

	assertOAuthError(t, sys.poll(otherClientID, da.DeviceCode, 0), http.StatusBadRequest, oauth.CodeInvalidGrant)

	// The rightful client still gets its token.
	if resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 0); resp.StatusCode != http.StatusOK {
		t.Errorf("rightful client: status %d, want 200: %s", resp.StatusCode, resp.Body)
	}
}

func TestUnknownDeviceCode(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	unknown, _ := codes.NewDeviceCode(nil)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, unknown, 0), http.StatusBadRequest, oauth.CodeInvalidGrant)
	assertOAuthError(t, sys.poll(devstack.DemoClientID, "not-a-code", 0), http.StatusBadRequest, oauth.CodeInvalidGrant)
}

// TestRacingPollsGetOneToken races polls through two edges with the replay
// window turned off: exactly one redeems the code.
func TestRacingPollsGetOneToken(t *testing.T) {
	t.Parallel()
	noReplay := func(c *edge.Config) { c.ReplayWindow = -1 }
	sys := startSystem(t, withReplayWindow(-1))
	tokens, invalid := racePolls(t, sys, sys.secondEdge(noReplay))

	if len(tokens) != 1 {
		t.Errorf("%d polls got a token, want exactly 1", len(tokens))
	}
	if invalid != racePollers-1 {
		t.Errorf("%d polls got invalid_grant, want %d", invalid, racePollers-1)
	}
}

// TestRacingPollsShareOneToken races polls through two edges within the
// replay window: one redeems, the others get the same response again, and
// no second token exists.
func TestRacingPollsShareOneToken(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	tokens, invalid := racePolls(t, sys, sys.secondEdge())

	if len(tokens) != racePollers {
		t.Errorf("%d polls got a token, want all %d within the replay window", len(tokens), racePollers)
	}
	if invalid != 0 {
		t.Errorf("%d polls got invalid_grant, want 0", invalid)
	}
	distinct := map[string]bool{}
	for _, tok := range tokens {
		distinct[tok] = true
	}
	if len(distinct) != 1 {
		t.Errorf("polls got %d distinct access tokens, want 1", len(distinct))
	}
}

const racePollers = 16

// racePolls approves a code and sends racePollers simultaneous polls for
// it, alternating between the system's edge and other. It returns the
// access tokens received and the number of invalid_grant answers.
func racePolls(t *testing.T, sys *system, other string) (tokens []string, invalid int) {
	t.Helper()
	da := sys.authorize(devstack.DemoClientID, "profile")
	sys.decide(da, "approve")
	sys.waitForState(da.DeviceCode, events.StateIssued)

	form := url.Values{"grant_type": {oauth.GrantTypeDeviceCode}, "client_id": {devstack.DemoClientID}, "device_code": {da.DeviceCode}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racePollers {
		base := sys.URL
		if i%2 == 1 {
			base = other
		}
		wg.Go(func() {
			<-start
			resp, err := http.PostForm(base+edge.PathToken, form)
			if err != nil {
				t.Errorf("poll: %v", err)
				return
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case resp.StatusCode == http.StatusOK && body["access_token"] != nil:
				tokens = append(tokens, body["access_token"].(string))
			case body["error"] == oauth.CodeInvalidGrant:
				invalid++
			default:
				t.Errorf("racing poll got status %d %v", resp.StatusCode, body)
			}
		})
	}
	close(start)
	wg.Wait()
	return tokens, invalid
}

func TestHeldPollAnsweredOnApproval(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	type result struct {
		resp response
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 20*time.Second)
		done <- result{resp, time.Now()}
	}()
	sys.waitForPoll(da.DeviceCode)

	started := make(chan time.Time, 1)
	sys.newPhone().decideAndSignal(da.VerificationURIComplete, "approve", started)
	decidedAt := <-started

	select {
	case r := <-done:
		if r.resp.StatusCode != http.StatusOK {
			t.Fatalf("held poll: status %d, want 200: %s", r.resp.StatusCode, r.resp.Body)
		}
		if got := r.resp.Header.Get("Preference-Applied"); got != "wait=20" {
			t.Errorf("Preference-Applied %q, want wait=20", got)
		}
		if latency := r.at.Sub(decidedAt); latency > time.Second {
			t.Errorf("token arrived %s after the decision was posted, want within moments", latency)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held poll not answered within 10s of the approval")
	}
}

func TestHeldPollDenied(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	done := make(chan response, 1)
	go func() { done <- sys.poll(devstack.DemoClientID, da.DeviceCode, 20*time.Second) }()
	sys.waitForPoll(da.DeviceCode)
	sys.decide(da, "deny")

	select {
	case resp := <-done:
		assertOAuthError(t, resp, http.StatusBadRequest, oauth.CodeAccessDenied)
	case <-time.After(10 * time.Second):
		t.Fatal("held poll not answered within 10s of the denial")
	}
}

func TestHoldEndsAsPlainPoll(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, func(cfg *devstack.Config) { cfg.Edge.MaxHold = 2 * time.Second })
	da := sys.authorize(devstack.DemoClientID, "profile")

	start := time.Now()
	resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 30*time.Second)
	elapsed := time.Since(start)

	assertOAuthError(t, resp, http.StatusBadRequest, oauth.CodeAuthorizationPending)
	if got := resp.Header.Get("Preference-Applied"); got != "wait=2" {
		t.Errorf("Preference-Applied %q, want the capped wait=2", got)
	}
	if elapsed < 1900*time.Millisecond || elapsed > 4*time.Second {
		t.Errorf("hold lasted %s, want about the 2s cap", elapsed)
	}
}

func TestPollWithoutPreferIsImmediate(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	start := time.Now()
	resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 0)
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Errorf("plain poll took %s, want an immediate answer", elapsed)
	}
	assertOAuthError(t, resp, http.StatusBadRequest, oauth.CodeAuthorizationPending)
	if got := resp.Header.Get("Preference-Applied"); got != "" {
		t.Errorf("Preference-Applied %q on a poll without Prefer", got)
	}
}

// TestHeldPollReadsNoStorage counts the KV reads of the codes bucket, which
// are JetStream API requests, while a poll is held.
func TestHeldPollReadsNoStorage(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")

	var reads atomic.Int32
	nc := sys.conn()
	var subs []*nats.Subscription
	for _, subject := range []string{
		"$JS.API.DIRECT.GET.KV_" + events.BucketCodes + ".>",
		"$JS.API.DIRECT.GET.KV_" + events.BucketCodes,
		"$JS.API.STREAM.MSG.GET.KV_" + events.BucketCodes,
	} {
		sub, err := nc.Subscribe(subject, func(*nats.Msg) { reads.Add(1) })
		if err != nil {
			t.Fatalf("subscribe %s: %v", subject, err)
		}
		subs = append(subs, sub)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}

	done := make(chan response, 1)
	go func() { done <- sys.poll(devstack.DemoClientID, da.DeviceCode, 20*time.Second) }()
	sys.waitForPoll(da.DeviceCode)
	// waitForPoll reads the record too; count those reads before the
	// interval starts, since the counting callbacks run asynchronously.
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	waitFor(t, 5*time.Second, "the counted reads to be handled", func() bool {
		for _, sub := range subs {
			if pending, _, _ := sub.Pending(); pending > 0 {
				return false
			}
		}
		return true
	})
	if reads.Load() == 0 {
		t.Fatal("no KV read seen for the poll itself; the counter is not working")
	}
	waitFor(t, 5*time.Second, "the counting callbacks to catch up", func() bool {
		for _, sub := range subs {
			if n, _, _ := sub.Pending(); n > 0 {
				return false
			}
		}
		return true
	})

	before := reads.Load()
	time.Sleep(3 * time.Second) // The interval being measured, not a wait for a condition.
	if during := reads.Load() - before; during != 0 {
		t.Errorf("%d KV reads while the poll was held, want 0", during)
	}

	sys.decide(da, "approve")
	select {
	case resp := <-done:
		if resp.StatusCode != http.StatusOK {
			t.Errorf("held poll: status %d: %s", resp.StatusCode, resp.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held poll not answered after approval")
	}
}

// waitForPoll waits until a poll of deviceCode has been recorded, which a
// held poll does after it subscribed and before it waits.
func (s *system) waitForPoll(deviceCode string) {
	s.t.Helper()
	bucket := s.codeBucket()
	id := s.codeID(deviceCode)
	waitFor(s.t, 5*time.Second, "the poll to be recorded", func() bool {
		rec, _, err := bucket.Get(s.t.Context(), id)
		return err == nil && !rec.LastPollAt.IsZero()
	})
}
