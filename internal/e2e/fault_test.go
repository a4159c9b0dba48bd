package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/approver"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/issuer"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/oauth"
	"github.com/streamco/deviceauth/internal/worker"
)

// Size of the fault test: concurrent device flows, and how many of them
// the person denies.
const (
	faultFlows   = 200
	faultDenyOne = 10 // every tenth flow is denied
	faultPhones  = 8
)

// service is one running process of the fault test: its NATS connection
// and how to kill it.
type service struct {
	name   string
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

// kill stops the service the way a crash does: its connection drops with
// no drain and nothing is acknowledged afterwards.
func (s *service) kill() {
	s.nc.Close()
	s.cancel()
}

// issueLog collects the "token issued" lines of every issuer.
type issueLog struct {
	mu     sync.Mutex
	grants map[string]map[string]bool // grant id -> jti set
}

func (l *issueLog) Write(p []byte) (int, error) {
	var line struct {
		Message string `json:"message"`
		GrantID string `json:"grant_id"`
		JTI     string `json:"jti"`
	}
	if json.Unmarshal(p, &line) == nil && line.Message == "token issued" {
		l.mu.Lock()
		if l.grants[line.GrantID] == nil {
			l.grants[line.GrantID] = map[string]bool{}
		}
		l.grants[line.GrantID][line.JTI] = true
		l.mu.Unlock()
	}
	return len(p), nil
}

// faultSystem is a whole deployment on a three-node cluster: two edges,
// two approvers, two issuers, each on its own connection.
type faultSystem struct {
	t          *testing.T
	cluster    *cluster
	hashKey    []byte
	edges      []*httptest.Server
	edgeObjs   []*edge.Edge
	services   map[string]*service
	issued     *issueLog
	registries map[string]*prometheus.Registry
	errLog     zerolog.Logger
	// issuerCrash is called by the first issuer after each stored token,
	// before the acknowledgement.
	issuerCrash func()
}

func (f *faultSystem) connect(name string) *nats.Conn {
	f.t.Helper()
	nc, err := natsinfra.Connect(f.cluster.URL(), name, zerolog.Nop())
	if err != nil {
		f.t.Fatalf("connect %s: %v", name, err)
	}
	f.t.Cleanup(nc.Close)
	return nc
}

func (f *faultSystem) run(name string, nc *nats.Conn, run func(context.Context) error) *service {
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{name: name, nc: nc, cancel: cancel, done: make(chan struct{})}
	f.services[name] = s
	go func() {
		defer close(s.done)
		if err := run(ctx); err != nil && ctx.Err() == nil && !nc.IsClosed() {
			f.t.Errorf("%s stopped: %v", name, err)
		}
	}()
	f.t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

func startFaultSystem(t *testing.T) *faultSystem {
	t.Helper()
	f := &faultSystem{
		t:          t,
		cluster:    startCluster(t),
		services:   map[string]*service{},
		registries: map[string]*prometheus.Registry{},
		issued:     &issueLog{grants: map[string]map[string]bool{}},
		errLog:     zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	}
	storage := natsinfra.Settings{Replicas: 3}
	dataDir := t.TempDir()
	var err error
	f.hashKey, err = keyfile.LoadOrCreate(filepath.Join(dataDir, "hash.key"))
	if err != nil {
		t.Fatalf("hash key: %v", err)
	}
	if err := devstack.Seed(t.Context(), f.connect("seed"), storage, bcrypt.MinCost); err != nil {
		t.Fatalf("seed: %v", err)
	}

	// Redeliveries after a crash come quickly, so the test stays short.
	workerCfg := worker.Config{AckWait: faultAckWait}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("approver-%d", i)
		nc := f.connect(name)
		a, err := approver.New(nc, approver.Config{Storage: storage, Worker: workerCfg}, f.errLog)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		f.registries[name] = a.Metrics()
		f.run(name, nc, a.Run)
		f.waitReady(name, a.Ready)
	}

	for i := 1; i <= 2; i++ {
		srv := httptest.NewUnstartedServer(nil)
		srv.Listener = &connTracker{Listener: srv.Listener}
		f.edges = append(f.edges, srv)
	}
	publicURL := "http://" + f.edges[0].Listener.Addr().String()
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("issuer-%d", i)
		nc := f.connect(name)
		cfg := issuer.Config{
			Storage: storage, Worker: workerCfg,
			Issuer: publicURL, Audience: devstack.DefaultAudience,
			KeyDir: filepath.Join(dataDir, "keys"), HashKey: f.hashKey,
			// ES256 signs in a fraction of RS256's CPU time, which the
			// race detector multiplies.
			Algorithm: issuer.AlgorithmES256,
		}
		if i == 1 {
			cfg.AfterStore = func(string) {
				if f.issuerCrash != nil {
					f.issuerCrash()
				}
			}
		}
		log := zerolog.New(f.issued)
		is, err := issuer.New(nc, cfg, log)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		f.registries[name] = is.Metrics()
		f.run(name, nc, is.Run)
		f.waitReady(name, is.Ready)
	}

	for i, srv := range f.edges {
		name := fmt.Sprintf("edge-%d", i+1)
		nc := f.connect(name)
		e, err := edge.New(nc, edge.Config{
			PublicURL: publicURL, HashKey: f.hashKey, Storage: storage,
			PollInterval: time.Second, PasswordCost: bcrypt.MinCost,
		}, f.errLog)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := e.Start(t.Context()); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		srv.Config.Handler = e.Handler()
		srv.Start()
		t.Cleanup(srv.Close)
		f.edgeObjs = append(f.edgeObjs, e)
		f.services[name] = &service{name: name, nc: nc, cancel: func() {}, done: make(chan struct{})}
	}
	return f
}

// checkReplicasKept ensures the codes bucket again with one replica, as a
// service left at the default --replicas would, and expects it to keep
// its three.
func (f *faultSystem) checkReplicasKept() {
	f.t.Helper()
	js, _ := jetstream.New(f.connect("replicas-check"))
	if _, err := natsinfra.EnsureBucket(f.t.Context(), js, events.BucketCodes, natsinfra.Settings{Replicas: 1}); err != nil {
		f.t.Fatalf("ensure the codes bucket with one replica: %v", err)
	}
	stream, err := js.Stream(f.t.Context(), "KV_"+events.BucketCodes)
	if err != nil {
		f.t.Fatalf("codes bucket stream: %v", err)
	}
	if got := stream.CachedInfo().Config.Replicas; got != 3 {
		f.t.Errorf("codes bucket has %d replicas after a service ensured it with 1, want the 3 it had", got)
	}
}

// waitReady waits until a service has created what it needs. Services
// started together on a fresh cluster would all race to create the same
// replicated buckets; an orchestrator's readiness gate orders them the
// same way.
func (f *faultSystem) waitReady(name string, ready func(context.Context) error) {
	f.t.Helper()
	waitFor(f.t, 30*time.Second, name+" to be ready", func() bool {
		ctx, cancel := context.WithTimeout(f.t.Context(), 2*time.Second)
		defer cancel()
		return ready(ctx) == nil
	})
}

// faultAckWait is the workers' AckWait in the fault test, and
// grantRepairWait how long a grant may take to appear after its token: a
// redelivery, with room for a slow machine.
const (
	faultAckWait    = 2 * time.Second
	grantRepairWait = 3*faultAckWait + 5*time.Second
)

// killEdge crashes edge i: its connections are cut mid-request, parked
// held polls included, its port closes and its NATS connection drops.
func (f *faultSystem) killEdge(i int) {
	srv := f.edges[i]
	srv.Listener.Close()
	srv.Listener.(*connTracker).closeAll()
	f.services[fmt.Sprintf("edge-%d", i+1)].nc.Close()
}

// connTracker is a listener that can close every connection it accepted,
// as a crash would, including those net/http no longer tracks because a
// held poll took them over.
type connTracker struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connTracker) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, conn)
		l.mu.Unlock()
	}
	return conn, err
}

func (l *connTracker) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, conn := range l.conns {
		_ = conn.Close()
	}
}

func (f *faultSystem) heldPolls(i int) float64 {
	return metricValue(f.t, f.edgeObjs[i].Metrics(), "deviceauth_edge_held_polls", nil)
}

// faultFlow is one device and the person who decides its request.
type faultFlow struct {
	deny bool
	da   oauth.DeviceAuthorizationResponse

	tokens       map[string]bool // distinct access tokens received
	outcome      string          // "token", or the final OAuth error
	edgeFailures int             // polls cut or refused by an edge
	slowDowns    int
	finishedAt   time.Time
	decided      bool
}

var faultHTTP = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 0},
}

// TestFaultsLoseNothing runs a few hundred concurrent device flows on a
// three-node cluster with R3 storage while it kills an edge holding polls,
// an issuer between storing a token and acknowledging, an approver
// mid-stream and one NATS node. Every flow must end with exactly one token
// (or access_denied where the person denied), every grant must have been
// minted once, and devices on the killed edge must get their tokens through
// the other.
func TestFaultsLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault test starts a cluster and a few hundred flows")
	}
	t.Parallel()
	began := time.Now()
	f := startFaultSystem(t)
	t.Logf("%s: system up", time.Since(began).Round(time.Millisecond))
	f.checkReplicasKept()
	edgeURLs := []string{f.edges[0].URL, f.edges[1].URL}

	// The first issuer dies on the first token it stores, before the
	// acknowledgement; which issuer gets an event is up to the server, so
	// a later trigger might never fire.
	var issuerKilled atomic.Bool
	f.issuerCrash = func() {
		if issuerKilled.CompareAndSwap(false, true) {
			f.services["issuer-1"].kill()
			t.Logf("%s: issuer-1 killed after storing a token, before acknowledging it", time.Since(began).Round(time.Millisecond))
		}
	}

	phones := make(chan *faultPhone, faultPhones)
	for range faultPhones {
		phones <- signInPhone(t, edgeURLs)
	}

	flows := make([]*faultFlow, faultFlows)
	var authorized, finished sync.WaitGroup
	var tokensDelivered atomic.Int32
	deadline := time.Now().Add(90 * time.Second)
	for i := range flows {
		flow := &faultFlow{deny: i%faultDenyOne == 0, tokens: map[string]bool{}}
		flows[i] = flow
		authorized.Add(1)
		finished.Add(1)
		go func() {
			defer finished.Done()
			flow.run(t, edgeURLs, i%2, deadline, authorized.Done, &tokensDelivered)
		}()
	}
	authorized.Wait()

	// The person decides every flow, through whichever edge is up.
	var decisions sync.WaitGroup
	for i, flow := range flows {
		decisions.Go(func() {
			phone := <-phones
			defer func() { phones <- phone }()
			flow.decided = phone.decide(t, edgeURLs, i, flow)
		})
	}

	// Kill the first edge once it holds polls.
	waitFor(t, 30*time.Second, "the first edge to hold polls", func() bool { return f.heldPolls(0) >= 20 })
	f.killEdge(0)
	t.Logf("%s: edge-1 killed holding %d polls", time.Since(began).Round(time.Millisecond), 20)

	// Kill an approver once it has done some of the work.
	waitFor(t, 30*time.Second, "the approvers to acknowledge decisions", func() bool {
		return tokensDelivered.Load() >= 10
	})
	f.services["approver-1"].kill()
	t.Logf("%s: approver-1 killed after %d tokens", time.Since(began).Round(time.Millisecond), tokensDelivered.Load())

	// Lose one NATS node once a third of the tokens are out.
	waitFor(t, 60*time.Second, "a third of the tokens to be delivered", func() bool {
		return tokensDelivered.Load() >= faultFlows/3
	})
	f.cluster.servers[2].Shutdown()
	t.Logf("%s: NATS node n3 shut down after %d tokens", time.Since(began).Round(time.Millisecond), tokensDelivered.Load())

	decisions.Wait()
	t.Logf("%s: every decision made", time.Since(began).Round(time.Millisecond))
	finished.Wait()
	t.Logf("%s: every flow finished", time.Since(began).Round(time.Millisecond))

	if !issuerKilled.Load() {
		t.Error("the first issuer stored no token, so it was never killed between storing and acknowledging")
	}
	f.checkFlows(flows)
}

func (flow *faultFlow) run(t *testing.T, edges []string, edgeIdx int, deadline time.Time, authorized func(), delivered *atomic.Int32) {
	defer func() { flow.finishedAt = time.Now() }()
	// Device authorization, moving to the other edge on failure.
	for {
		resp, body, err := postForm(edges[edgeIdx]+edge.PathDeviceAuthorization, url.Values{"client_id": {devstack.DemoClientID}, "scope": {"profile offline_access"}}, nil)
		if err == nil && resp.StatusCode == http.StatusOK && json.Unmarshal(body, &flow.da) == nil {
			break
		}
		if time.Now().After(deadline) {
			flow.outcome = fmt.Sprintf("no device code: %v %s", err, body)
			authorized()
			return
		}
		edgeIdx = 1 - edgeIdx
		time.Sleep(200 * time.Millisecond) // A device's retry delay.
	}
	authorized()

	// Poll with a hold, never sooner than the interval after the previous
	// poll started.
	form := url.Values{"grant_type": {oauth.GrantTypeDeviceCode}, "client_id": {devstack.DemoClientID}, "device_code": {flow.da.DeviceCode}}
	interval := 1100 * time.Millisecond
	var lastPoll time.Time
	for time.Now().Before(deadline) {
		if wait := time.Until(lastPoll.Add(interval)); wait > 0 {
			time.Sleep(wait) // The device's poll interval.
		}
		lastPoll = time.Now()
		resp, body, err := postForm(edges[edgeIdx]+edge.PathToken, form, http.Header{"Prefer": {"wait=5"}})
		if err != nil || resp.StatusCode >= 500 {
			flow.edgeFailures++
			edgeIdx = 1 - edgeIdx
			continue
		}
		var answer map[string]any
		_ = json.Unmarshal(body, &answer)
		if resp.StatusCode == http.StatusOK {
			token, _ := answer["access_token"].(string)
			flow.tokens[token] = true
			flow.outcome = "token"
			delivered.Add(1)
			return
		}
		switch code, _ := answer["error"].(string); code {
		case oauth.CodeAuthorizationPending:
		case oauth.CodeSlowDown:
			flow.slowDowns++
			interval += 5 * time.Second
		default:
			flow.outcome = code
			return
		}
	}
	flow.outcome = "timed out"
}

func (f *faultSystem) checkFlows(flows []*faultFlow) {
	t := f.t
	nc := f.connect("check")
	js, _ := jetstream.New(nc)
	grantsKV, err := js.KeyValue(t.Context(), events.BucketGrants)
	if err != nil {
		t.Fatalf("grants bucket: %v", err)
	}
	grants := kv.New[events.Grant](grantsKV)
	hasher, _ := codes.NewHasher(f.hashKey)

	var onKilledEdge, failed int
	for i, flow := range flows {
		want := "token"
		if flow.deny {
			want = oauth.CodeAccessDenied
		}
		if flow.outcome != want {
			failed++
			if failed <= 10 {
				t.Errorf("flow %d (deny %v, decided %v): outcome %q, want %q", i, flow.deny, flow.decided, flow.outcome, want)
			}
			continue
		}
		if flow.edgeFailures > 0 {
			onKilledEdge++
		}
		if flow.deny {
			continue
		}
		if len(flow.tokens) != 1 {
			t.Errorf("flow %d received %d distinct tokens, want 1", i, len(flow.tokens))
		}

		var token string
		for token = range flow.tokens {
		}
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
			t.Errorf("flow %d: parse token: %v", i, err)
			continue
		}
		codeID := hasher.CodeID(flow.da.DeviceCode)
		grantID := "grant_" + codeID[:32]
		sub, _ := claims["sub"].(string)
		// An issuer killed between its compare-and-set and the grant write
		// leaves the grant to the approval's redelivery, one AckWait later.
		var grant events.Grant
		err := errors.New("not read")
		for end := time.Now().Add(grantRepairWait); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if grant, _, err = grants.Get(t.Context(), events.GrantKey(sub, grantID)); !errors.Is(err, kv.ErrNotFound) {
				break
			}
		}
		if err != nil {
			t.Errorf("flow %d: grant %s: %v", i, grantID, err)
			continue
		}
		if claims["jti"] != grant.AccessTokenID {
			t.Errorf("flow %d: token jti %v, grant records %s", i, claims["jti"], grant.AccessTokenID)
		}
		// An issuer killed after its compare-and-set reached the server
		// but before the reply did stored the token without logging it,
		// so a grant may have no log line, but never two.
		f.issued.mu.Lock()
		logged := f.issued.grants[grantID]
		f.issued.mu.Unlock()
		if len(logged) > 1 {
			t.Errorf("flow %d: grant %s stored with %d distinct jti, want 1", i, grantID, len(logged))
		}
		if len(logged) == 1 && !logged[grant.AccessTokenID] {
			t.Errorf("flow %d: issuer logged jti %v for grant %s, grant records %s", i, logged, grantID, grant.AccessTokenID)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d flows did not end as scripted", failed, len(flows))
	}
	if onKilledEdge == 0 {
		t.Error("no device saw an edge fail; the edge was killed too late to test anything")
	}
	var slowDowns int
	var last time.Time
	for _, flow := range flows {
		slowDowns += flow.slowDowns
		if flow.finishedAt.After(last) {
			last = flow.finishedAt
		}
	}
	t.Logf("%d flows, %d recovered from a failed edge, %d slow_down answers", len(flows), onKilledEdge, slowDowns)
}

// faultPhone is a signed-in browser that any edge serves: sessions live in
// KV and cookies for 127.0.0.1 go to every port.
type faultPhone struct {
	client *http.Client
}

var (
	faultCSRF      = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
	faultConfirmed = regexp.MustCompile(`name="confirmed" value="([^"]+)"`)
)

func signInPhone(t *testing.T, edges []string) *faultPhone {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	p := &faultPhone{client: &http.Client{Jar: jar, Timeout: 20 * time.Second}}
	page, err := p.get(edges[1] + edge.PathDevice)
	if err != nil {
		t.Fatalf("phone: %v", err)
	}
	csrf := faultCSRF.FindStringSubmatch(page)
	if csrf == nil {
		t.Fatal("phone: no CSRF token on the code page")
	}
	if _, err := p.post(edges[1]+edge.PathSignIn, url.Values{
		"csrf_token": {csrf[1]}, "username": {devstack.DemoUsername}, "password": {devstack.DemoPassword},
	}); err != nil {
		t.Fatalf("phone sign-in: %v", err)
	}
	return p
}

// decide approves or denies flow on the consent page, moving to another
// edge when one fails. It reports whether the decision was accepted.
func (p *faultPhone) decide(t *testing.T, edges []string, start int, flow *faultFlow) bool {
	if flow.da.UserCode == "" {
		return false
	}
	decision := "approve"
	if flow.deny {
		decision = "deny"
	}
	for attempt := range 20 {
		base := edges[(start+attempt)%2]
		page, err := p.get(base + edge.PathDevice)
		if err != nil {
			continue
		}
		csrf := faultCSRF.FindStringSubmatch(page)
		if csrf == nil {
			continue
		}
		// Typing the code leads a signed-in phone to the consent page, with
		// the proof that the person confirmed the code.
		consent, err := p.post(base+edge.PathDevice, url.Values{"csrf_token": {csrf[1]}, "user_code": {flow.da.UserCode}})
		if err != nil {
			continue
		}
		confirmed := faultConfirmed.FindStringSubmatch(consent)
		if confirmed == nil {
			if strings.Contains(consent, "expired or was already used") {
				// An earlier attempt's decision landed though its answer
				// was lost.
				return attempt > 0
			}
			continue
		}
		result, err := p.post(base+edge.PathConsent, url.Values{
			"csrf_token": {csrf[1]}, "user_code": {flow.da.UserCode}, "confirmed": {confirmed[1]}, "decision": {decision},
		})
		if err == nil && (strings.Contains(result, "Device connected") || strings.Contains(result, "Request denied")) {
			return true
		}
	}
	return false
}

func (p *faultPhone) get(u string) (string, error) {
	resp, err := p.client.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 500 {
		return "", fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	return string(body), nil
}

func (p *faultPhone) post(u string, form url.Values) (string, error) {
	resp, err := p.client.PostForm(u, form)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 500 {
		return "", fmt.Errorf("POST %s: status %d", u, resp.StatusCode)
	}
	return string(body), nil
}

// postForm posts a form with the fault test's client.
func postForm(u string, form url.Values, header http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := faultHTTP.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(bufio.NewReader(resp.Body))
	return resp, body, err
}
