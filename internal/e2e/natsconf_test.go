package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/approver"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/issuer"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/oauth"
)

// confPasswords are the passwords the test gives nats.conf through the
// environment, as an operator would.
var confPasswords = map[string]string{
	"edge":     "edge-secret",
	"approver": "approver-secret",
	"issuer":   "issuer-secret",
	"admin":    "admin-secret",
}

// startConfServer runs a nats-server with the repository's nats.conf. Only
// what places the server on this machine is replaced: the listen address,
// the store directory, the cluster routes and the monitoring port. The
// users and their permissions are the file's own.
func startConfServer(t *testing.T) *server.Server {
	t.Helper()
	t.Setenv("NATS_SERVER_NAME", "conf-test")
	for user, password := range confPasswords {
		t.Setenv(strings.ToUpper(user)+"_NATS_PASSWORD", password)
	}
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatalf("nats.conf does not load: %v", err)
	}
	if len(opts.Users) != len(confPasswords) {
		t.Fatalf("nats.conf defines %d users, want %d", len(opts.Users), len(confPasswords))
	}
	if !opts.JetStream || opts.Cluster.Name != "deviceauth" || len(opts.Routes) != 3 {
		t.Fatalf("nats.conf: jetstream %v, cluster %q with %d routes, want JetStream in cluster deviceauth with 3 routes",
			opts.JetStream, opts.Cluster.Name, len(opts.Routes))
	}

	opts.Host = "127.0.0.1"
	opts.Port = -1
	opts.HTTPPort = 0
	opts.Cluster = server.ClusterOpts{}
	opts.Routes = nil
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	opts.NoLog = true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("create server from nats.conf: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server from nats.conf not ready after 10s")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// violations collects the NATS errors a service logs.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("nats async error")) || bytes.Contains(p, []byte("ermission")) {
		v.mu.Lock()
		v.lines = append(v.lines, string(p))
		v.mu.Unlock()
	}
	return len(p), nil
}

func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.lines...)
}

// connectAs connects to srv as one of the nats.conf users, the way the
// binaries do.
func connectAs(t *testing.T, srv *server.Server, user string, log zerolog.Logger) *nats.Conn {
	t.Helper()
	nc, err := natsinfra.Connect(srv.ClientURL(), user, log, nats.UserInfo(user, confPasswords[user]))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestNATSConfPermissions runs every service under its own nats.conf user
// through a whole flow, then checks that the edge's user cannot publish
// what only the approver or the issuer may.
func TestNATSConfPermissions(t *testing.T) {
	srv := startConfServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dataDir := t.TempDir()
	hashKey, err := keyfile.LoadOrCreate(filepath.Join(dataDir, "hash.key"))
	if err != nil {
		t.Fatalf("hash key: %v", err)
	}

	// An operator seeds the demo client and account as admin.
	if err := devstack.Seed(ctx, connectAs(t, srv, "admin", zerolog.Nop()), natsinfra.Settings{}, bcrypt.MinCost); err != nil {
		t.Fatalf("seed as admin: %v", err)
	}

	logged := map[string]*violations{}
	serviceLog := func(name string) zerolog.Logger {
		logged[name] = &violations{}
		return zerolog.New(logged[name])
	}

	a, err := approver.New(connectAs(t, srv, "approver", serviceLog("approver")), approver.Config{}, serviceLog("approver"))
	if err != nil {
		t.Fatalf("approver: %v", err)
	}
	httpServer := httptest.NewUnstartedServer(nil)
	publicURL := "http://" + httpServer.Listener.Addr().String()
	is, err := issuer.New(connectAs(t, srv, "issuer", serviceLog("issuer")), issuer.Config{
		Issuer: publicURL, Audience: devstack.DefaultAudience, KeyDir: filepath.Join(dataDir, "keys"), HashKey: hashKey,
	}, serviceLog("issuer"))
	if err != nil {
		t.Fatalf("issuer: %v", err)
	}
	var workers sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"approver": a.Run, "issuer": is.Run} {
		workers.Go(func() {
			if err := run(ctx); err != nil {
				t.Errorf("%s stopped: %v", name, err)
			}
		})
	}
	defer workers.Wait()
	defer cancel()

	edgeLog := serviceLog("edge")
	edgeConn := connectAs(t, srv, "edge", edgeLog)
	e, err := edge.New(edgeConn, edge.Config{PublicURL: publicURL, HashKey: hashKey, PollInterval: time.Second, PasswordCost: bcrypt.MinCost}, edgeLog)
	if err != nil {
		t.Fatalf("edge: %v", err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatalf("start edge as the edge user: %v", err)
	}
	httpServer.Config.Handler = e.Handler()
	httpServer.Start()
	defer httpServer.Close()
	defer e.Close()

	// The whole flow, held poll and replay included, with each service
	// under its own user.
	sys := &system{t: t, URL: publicURL}
	da := sys.authorize(devstack.DemoClientID, "profile offline_access")
	held := sys.pollInBackground(publicURL, devstack.DemoClientID, da.DeviceCode, 15*time.Second)
	waitFor(t, 5*time.Second, "the poll to be held", func() bool {
		return metricValue(t, e.Metrics(), "deviceauth_edge_held_polls", nil) == 1
	})
	sys.decide(da, "approve")
	first := <-held
	if first.StatusCode != http.StatusOK {
		t.Fatalf("held poll: status %d: %s", first.StatusCode, first.Body)
	}
	if again := sys.poll(devstack.DemoClientID, da.DeviceCode, 0); !bytes.Equal(again.Body, first.Body) {
		t.Errorf("replay within the window: status %d: %s", again.StatusCode, again.Body)
	}
	// A refresh goes from the edge to an issuer and back, and revoking the
	// new refresh token writes the grant and deletes the token as the edge.
	var tokens map[string]any
	_ = json.Unmarshal(first.Body, &tokens)
	refreshed := sys.refresh(devstack.DemoClientID, tokens["refresh_token"].(string), "")
	if refreshed.StatusCode != http.StatusOK {
		t.Fatalf("refresh under the services' users: status %d: %s", refreshed.StatusCode, refreshed.Body)
	}
	newRefresh, _ := refreshed.json(t)["refresh_token"].(string)
	revoked := sys.postForm(edge.PathRevocation, url.Values{"client_id": {devstack.DemoClientID}, "token": {newRefresh}}, nil)
	if revoked.StatusCode != http.StatusOK {
		t.Errorf("revocation under the edge's user: status %d: %s", revoked.StatusCode, revoked.Body)
	}
	assertOAuthError(t, sys.refresh(devstack.DemoClientID, newRefresh, ""), http.StatusBadRequest, oauth.CodeInvalidGrant)

	for _, url := range []string{publicURL + edge.PathJWKS, publicURL + edge.PathReady} {
		if status := statusOf(t, url); status != http.StatusOK {
			t.Errorf("GET %s as the edge user: status %d, want 200", url, status)
		}
	}
	for _, check := range []struct {
		name  string
		ready func(context.Context) error
	}{{"edge", e.Ready}, {"approver", a.Ready}, {"issuer", is.Ready}} {
		if err := check.ready(ctx); err != nil {
			t.Errorf("%s not ready under its user: %v", check.name, err)
		}
	}

	for name, v := range logged {
		for _, line := range v.all() {
			t.Errorf("%s hit a NATS error under its user: %s", name, line)
		}
	}

	// What only the approver or the issuer may publish.
	edgeJS, err := jetstream.New(edgeConn)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	adminJS, err := jetstream.New(connectAs(t, srv, "admin", zerolog.Nop()))
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	forbidden := []string{
		events.Subject(events.SubjectGrantApproved, strings.Repeat("a", 64)),
		events.SubjectDeadLetter + "." + events.ConsumerIssuer,
		"$KV." + events.BucketKeys + "." + events.KeySetKey,
		"$JS.API.STREAM.DELETE." + events.StreamDevice,
		"$JS.ACK." + events.StreamDevice + "." + events.ConsumerIssuer + ".1.1.1.1.1",
	}
	// The server drops a forbidden publish and sends no acknowledgement,
	// so each attempt ends in a timeout; they run together to save time.
	var publishes sync.WaitGroup
	for _, subject := range forbidden {
		publishes.Go(func() {
			publishCtx, cancelPublish := context.WithTimeout(ctx, 2*time.Second)
			defer cancelPublish()
			if _, err := edgeJS.Publish(publishCtx, subject, []byte(`{"keys":[]}`)); err == nil {
				t.Errorf("edge user published to %s", subject)
			}
		})
	}
	publishes.Wait()
	stream, err := adminJS.Stream(ctx, events.StreamDevice)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if _, err := stream.GetLastMsgForSubject(ctx, forbidden[0]); err == nil {
		t.Errorf("an approval published by the edge user was stored on %s", forbidden[0])
	}
	keys, err := adminJS.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		t.Fatalf("keys bucket: %v", err)
	}
	entry, err := keys.Get(ctx, events.KeySetKey)
	if err != nil || bytes.Contains(entry.Value(), []byte(`{"keys":[]}`)) {
		t.Errorf("published keys after the edge user's write: %v, %s", err, entry.Value())
	}

	// Another service's replies are closed to the edge user.
	denied := make(chan error, 1)
	probe, err := nats.Connect(srv.ClientURL(), nats.UserInfo("edge", confPasswords["edge"]),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer probe.Close()
	if _, err := probe.SubscribeSync(natsinfra.InboxPrefix("issuer") + ".>"); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	select {
	case err := <-denied:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("subscribing to the issuer's inbox: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("edge user subscribed to the issuer's inbox without a permissions violation")
	}
}
