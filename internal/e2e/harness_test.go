package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// clock is a test clock that runs with real time plus an offset, so tests
// can jump past an expiry while timers and NATS keep working.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// system is the whole server on an embedded nats-server with its own store
// directory, served over real HTTP on loopback.
type system struct {
	t      testing.TB
	stack  *devstack.Stack
	server *httptest.Server
	clock  *clock
	URL    string
	// dataDir holds the stack's store and keys.
	dataDir string
	// errorLogs counts log lines at error level or above.
	errorLogs *atomic.Int32
	// limits are the edge's abuse limits, which a second edge shares.
	limits edge.Limits

	stopOnce sync.Once
}

// stop stops every part and the NATS server, keeping the data directory.
func (s *system) stop() {
	s.stopOnce.Do(func() {
		s.server.CloseClientConnections()
		s.stack.Edge.Close()
		s.server.Close()
		s.stack.Close()
	})
}

// withDataDir starts the system on an existing data directory.
func withDataDir(dir string) systemOption {
	return func(c *devstack.Config) { c.DataDir = dir }
}

// Clients seeded for the tests besides the demo client.
const (
	otherClientID = "other-app"
)

type systemOption func(*devstack.Config)

// withReplayWindow sets the edge's replay window; a negative one turns
// replays off.
func withReplayWindow(d time.Duration) systemOption {
	return func(c *devstack.Config) { c.Edge.ReplayWindow = d }
}

func startSystem(t testing.TB, opts ...systemOption) *system {
	t.Helper()

	server := httptest.NewUnstartedServer(nil)
	publicURL := "http://" + server.Listener.Addr().String()
	c := &clock{}

	cfg := devstack.Config{
		DataDir: t.TempDir(),
		Seed:    true,
		Edge: edge.Config{
			PublicURL:    publicURL,
			PollInterval: time.Second,
			PasswordCost: bcrypt.MinCost,
			Now:          c.Now,
		},
	}
	cfg.Issuer.Now = c.Now
	for _, opt := range opts {
		opt(&cfg)
	}

	errorLogs := new(atomic.Int32)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).
		Hook(zerolog.HookFunc(func(_ *zerolog.Event, level zerolog.Level, _ string) {
			if level >= zerolog.ErrorLevel {
				errorLogs.Add(1)
			}
		}))
	stack, err := devstack.Start(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("start system: %v", err)
	}
	server.Config.Handler = stack.Edge.Handler()
	server.Start()

	s := &system{t: t, stack: stack, server: server, clock: c, URL: publicURL, dataDir: cfg.DataDir, errorLogs: errorLogs, limits: cfg.Edge.Limits}
	t.Cleanup(s.stop)
	s.seedClient(events.Client{
		ID: otherClientID, Name: "Other App", Public: true,
		Scopes: []string{"profile"}, Grants: []string{oauth.GrantTypeDeviceCode},
	})
	return s
}

// seedClient stores a client and waits until the edge sees it.
func (s *system) seedClient(c events.Client) {
	s.t.Helper()
	s.storeClient(c)
	waitFor(s.t, 5*time.Second, "edge to see client "+c.ID, func() bool {
		resp := s.postForm(edge.PathDeviceAuthorization, url.Values{"client_id": {c.ID}}, nil)
		return resp.StatusCode != http.StatusUnauthorized
	})
}

// storeClient stores a client, as an operator does.
func (s *system) storeClient(c events.Client) {
	s.t.Helper()
	nc := s.conn()
	js, _ := jetstream.New(nc)
	bucket, err := js.KeyValue(s.t.Context(), events.BucketClients)
	if err != nil {
		s.t.Fatalf("open clients bucket: %v", err)
	}
	if _, err := kv.New[events.Client](bucket).Put(s.t.Context(), c.ID, c); err != nil {
		s.t.Fatalf("store client %s: %v", c.ID, err)
	}
}

// conn opens a NATS connection to the embedded server for the test itself.
func (s *system) conn() *nats.Conn {
	s.t.Helper()
	nc, err := nats.Connect(s.stack.NATSURL())
	if err != nil {
		s.t.Fatalf("connect to NATS: %v", err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// codeBucket opens the codes bucket, to read code records straight from KV.
func (s *system) codeBucket() *kv.Bucket[events.CodeRecord] {
	s.t.Helper()
	js, _ := jetstream.New(s.conn())
	bucket, err := js.KeyValue(s.t.Context(), events.BucketCodes)
	if err != nil {
		s.t.Fatalf("open codes bucket: %v", err)
	}
	return kv.New[events.CodeRecord](bucket)
}

// oauthConfig returns an x/oauth2 configuration for the device side.
func (s *system) oauthConfig(clientID string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID,
		Scopes:   scopes,
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: s.URL + edge.PathDeviceAuthorization,
			TokenURL:      s.URL + edge.PathToken,
		},
	}
}

type response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, r.Body)
	}
	return m
}

func (r response) errorCode(t testing.TB) string {
	t.Helper()
	code, _ := r.json(t)["error"].(string)
	return code
}

// postForm posts a form and returns the whole response.
func (s *system) postForm(path string, form url.Values, header http.Header) response {
	s.t.Helper()
	return s.postFormAt(s.URL, path, form, header)
}

// postFormAt is postForm to the edge at base.
func (s *system) postFormAt(base, path string, form url.Values, header http.Header) response {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		s.t.Fatalf("build request: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	return s.do(req)
}

// pollInBackground polls through the edge at base on another goroutine and
// delivers the response. A request that fails is delivered as status 0 with
// the error as its body, because only the test's own goroutine may stop it.
func (s *system) pollInBackground(base, clientID, deviceCode string, hold time.Duration) <-chan response {
	out := make(chan response, 1)
	prefer := fmt.Sprintf("wait=%d", int(hold/time.Second))
	go func() { out <- postToken(s.t.Context(), http.DefaultClient, base, clientID, deviceCode, prefer) }()
	return out
}

// postToken sends one token request for deviceCode through client, with a
// Prefer header unless prefer is empty. A request that fails comes back as
// status 0 with the error as its body, so it may run on any goroutine.
func postToken(ctx context.Context, client *http.Client, base, clientID, deviceCode, prefer string) response {
	body := strings.NewReader(deviceCodeForm(clientID, deviceCode).Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+edge.PathToken, body)
	if err != nil {
		return response{Body: []byte(err.Error())}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if prefer != "" {
		req.Header.Set("Prefer", prefer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{Body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{StatusCode: resp.StatusCode, Header: resp.Header, Body: data}
}

// deviceCodeForm is the form of a device code token request.
func deviceCodeForm(clientID, deviceCode string) url.Values {
	return url.Values{
		"grant_type":  {oauth.GrantTypeDeviceCode},
		"client_id":   {clientID},
		"device_code": {deviceCode},
	}
}

func (s *system) do(req *http.Request) response {
	s.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{StatusCode: resp.StatusCode, Header: resp.Header, Body: body}
}

// authorize requests a device code for clientID with a plain HTTP form.
func (s *system) authorize(clientID, scope string) oauth.DeviceAuthorizationResponse {
	s.t.Helper()
	form := url.Values{"client_id": {clientID}}
	if scope != "" {
		form.Set("scope", scope)
	}
	resp := s.postForm(edge.PathDeviceAuthorization, form, nil)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("device authorization: status %d, want 200: %s", resp.StatusCode, resp.Body)
	}
	var da oauth.DeviceAuthorizationResponse
	if err := json.Unmarshal(resp.Body, &da); err != nil {
		s.t.Fatalf("decode device authorization: %v", err)
	}
	return da
}

// poll makes one token request for deviceCode. A non-zero hold adds
// "Prefer: wait=N".
func (s *system) poll(clientID, deviceCode string, hold time.Duration) response {
	s.t.Helper()
	return s.pollAt(s.URL, clientID, deviceCode, hold)
}

// pollAt is poll through the edge at base.
func (s *system) pollAt(base, clientID, deviceCode string, hold time.Duration) response {
	s.t.Helper()
	var header http.Header
	if hold > 0 {
		header = http.Header{"Prefer": {fmt.Sprintf("wait=%d", int(hold/time.Second))}}
	}
	return s.postFormAt(base, edge.PathToken, deviceCodeForm(clientID, deviceCode), header)
}

// phone is a person's browser: an HTTP client with a cookie jar that
// follows redirects only to the edge.
type phone struct {
	t      testing.TB
	client *http.Client
	base   string
}

func (s *system) newPhone() *phone {
	jar, _ := cookiejar.New(nil)
	return &phone{t: s.t, base: s.URL, client: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

var (
	csrfField  = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
	titleField = regexp.MustCompile(`<h1>([^<]*)</h1>`)

	confirmedField = regexp.MustCompile(`name="confirmed" value="([^"]+)"`)
)

// page is an HTML page the phone loaded.
type page struct {
	Status int
	URL    string
	Body   string
}

func (p page) title() string {
	if m := titleField.FindStringSubmatch(p.Body); m != nil {
		return m[1]
	}
	return ""
}

// confirmation returns the hidden confirmation token of the page's form.
func (p page) confirmation(t testing.TB) string {
	t.Helper()
	m := confirmedField.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("page %q has no confirmation token", p.title())
	}
	return m[1]
}

func (p page) csrf(t testing.TB) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("page %q has no CSRF token", p.title())
	}
	return m[1]
}

func (ph *phone) get(rawURL string) page {
	ph.t.Helper()
	resp, err := ph.client.Get(rawURL)
	if err != nil {
		ph.t.Fatalf("GET %s: %v", rawURL, err)
	}
	return ph.read(resp)
}

func (ph *phone) post(path string, form url.Values) page {
	ph.t.Helper()
	resp, err := ph.client.PostForm(ph.base+path, form)
	if err != nil {
		ph.t.Fatalf("POST %s: %v", path, err)
	}
	return ph.read(resp)
}

func (ph *phone) read(resp *http.Response) page {
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{Status: resp.StatusCode, URL: resp.Request.URL.String(), Body: string(body)}
}

// decide walks the verification pages from the QR link: confirm the
// pre-filled code, sign in, and approve or deny. It returns the final page.
func (ph *phone) decide(verificationURIComplete, decision string) page {
	ph.t.Helper()
	return ph.decideAndSignal(verificationURIComplete, decision, nil)
}

// decideAndSignal is decide, sending the time on started just before the
// decision is posted.
func (ph *phone) decideAndSignal(verificationURIComplete, decision string, started chan<- time.Time) page {
	ph.t.Helper()

	confirm := ph.get(verificationURIComplete)
	if confirm.Status != http.StatusOK || confirm.title() != "Is this your code?" {
		ph.t.Fatalf("QR link opened %q (status %d), want the confirmation page", confirm.title(), confirm.Status)
	}
	userCode := regexp.MustCompile(`name="user_code" value="([^"]+)"`).FindStringSubmatch(confirm.Body)[1]

	signIn := ph.post(edge.PathDevice, url.Values{"csrf_token": {confirm.csrf(ph.t)}, "user_code": {userCode}})
	if signIn.title() != "Sign in" {
		ph.t.Fatalf("after confirming the code got %q (status %d), want the sign-in page", signIn.title(), signIn.Status)
	}

	consent := ph.post(edge.PathSignIn, url.Values{
		"csrf_token": {signIn.csrf(ph.t)},
		"user_code":  {userCode},
		"confirmed":  {signIn.confirmation(ph.t)},
		"username":   {devstack.DemoUsername},
		"password":   {devstack.DemoPassword},
	})
	if consent.title() != "Allow this device?" {
		ph.t.Fatalf("after sign-in got %q (status %d), want the consent page", consent.title(), consent.Status)
	}

	form := url.Values{
		"csrf_token": {consent.csrf(ph.t)},
		"user_code":  {userCode},
		"confirmed":  {consent.confirmation(ph.t)},
		"decision":   {decision},
	}
	if started != nil {
		started <- time.Now()
	}
	return ph.post(edge.PathConsent, form)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withTimeout returns a context for one blocking call in a test.
func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
