// Package devstack runs the whole system in one process: an embedded
// nats-server with JetStream, an edge, an approver and an issuer, each on
// its own NATS connection as if it were its own process. It backs
// "edge --dev" and the end-to-end tests.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/approver"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/issuer"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/oauth"
	"github.com/streamco/deviceauth/internal/ops"
)

// Config configures a stack. Edge.HashKey and Issuer.HashKey are set from
// the data directory when empty.
type Config struct {
	// DataDir holds the JetStream store, the hash key and the signing keys.
	DataDir string
	// NATSPort is the embedded server's client port on 127.0.0.1; -1 picks
	// a free one.
	NATSPort int

	Edge     edge.Config
	Approver approver.Config
	Issuer   issuer.Config

	// Seed creates the demo client and account when they are missing.
	Seed bool
}

// Stack is a running system.
type Stack struct {
	Server   *server.Server
	Edge     *edge.Edge
	Approver *approver.Approver
	Issuer   *issuer.Issuer

	conns  []*nats.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// Demo client and account created by Seed.
const (
	DemoClientID = "tv-app"
	DemoUsername = "demo"
	DemoPassword = "demo"
)

// DefaultAudience is the "aud" of access tokens when none is configured.
const DefaultAudience = "streaming-api"

// Start starts every part and returns once the edge is ready to serve.
// The workers run until Close.
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (*Stack, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devstack: create data directory: %w", err)
	}
	hashKey, err := keyfile.LoadOrCreate(filepath.Join(cfg.DataDir, "hash.key"))
	if err != nil {
		return nil, err
	}
	if cfg.Edge.HashKey == nil {
		cfg.Edge.HashKey = hashKey
	}
	if cfg.Issuer.HashKey == nil {
		cfg.Issuer.HashKey = hashKey
	}
	if cfg.Issuer.KeyDir == "" {
		cfg.Issuer.KeyDir = filepath.Join(cfg.DataDir, "keys")
	}
	if cfg.Issuer.Audience == "" {
		cfg.Issuer.Audience = DefaultAudience
	}
	if cfg.Issuer.Issuer == "" {
		cfg.Issuer.Issuer = strings.TrimSuffix(cfg.Edge.PublicURL, "/")
	}

	port := cfg.NATSPort
	if port == 0 {
		port = -1
	}
	srv, err := natsinfra.StartEmbedded(natsinfra.EmbeddedConfig{StoreDir: filepath.Join(cfg.DataDir, "jetstream"), Port: port})
	if err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Stack{Server: srv, cancel: cancel, errs: make(chan error, 3)}
	fail := func(err error) (*Stack, error) {
		s.Close()
		return nil, err
	}

	connect := func(name string) (*nats.Conn, error) {
		nc, err := natsinfra.Connect(srv.ClientURL(), name, log)
		if err == nil {
			s.conns = append(s.conns, nc)
		}
		return nc, err
	}

	edgeConn, err := connect("edge")
	if err != nil {
		return fail(err)
	}
	if cfg.Seed {
		if err := Seed(ctx, edgeConn, cfg.Edge.Storage, cfg.Edge.PasswordCost); err != nil {
			return fail(err)
		}
	}

	approverConn, err := connect("approver")
	if err != nil {
		return fail(err)
	}
	a, err := approver.New(approverConn, cfg.Approver, log)
	if err != nil {
		return fail(err)
	}
	issuerConn, err := connect("issuer")
	if err != nil {
		return fail(err)
	}
	is, err := issuer.New(issuerConn, cfg.Issuer, log)
	if err != nil {
		return fail(err)
	}
	s.Approver, s.Issuer = a, is
	s.run(runCtx, "approver", a.Run)
	s.run(runCtx, "issuer", is.Run)

	s.Edge, err = edge.New(edgeConn, cfg.Edge, log)
	if err != nil {
		return fail(err)
	}
	if err := s.Edge.Start(runCtx); err != nil {
		return fail(err)
	}
	return s, nil
}

func (s *Stack) run(ctx context.Context, name string, fn func(context.Context) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.errs <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// Errors delivers the error of a worker that stopped on its own.
func (s *Stack) Errors() <-chan error { return s.errs }

// Metrics gathers the metrics of all three services. Each keeps its own
// registry, so their names never collide inside one process.
func (s *Stack) Metrics() prometheus.Gatherer {
	return prometheus.Gatherers{s.Edge.Metrics(), s.Approver.Metrics(), s.Issuer.Metrics()}
}

// Ready reports whether all three services are ready.
func (s *Stack) Ready(ctx context.Context) error {
	return ops.All(s.Edge.Ready, s.Approver.Ready, s.Issuer.Ready)(ctx)
}

// NATSURL returns the embedded server's client URL.
func (s *Stack) NATSURL() string { return s.Server.ClientURL() }

// Close stops the workers, closes the connections and shuts the server down.
func (s *Stack) Close() {
	if s.Edge != nil {
		s.Edge.Close()
	}
	s.cancel()
	s.wg.Wait()
	for _, nc := range s.conns {
		_ = nc.Drain()
	}
	for _, nc := range s.conns {
		nc.Close()
	}
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
}

// Seed creates the demo client (public, device grant, scopes profile and
// offline_access) and the demo account when they are missing. passwordCost
// is the bcrypt cost of the demo password; zero means the default.
func Seed(ctx context.Context, nc *nats.Conn, settings natsinfra.Settings, passwordCost int) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	buckets, err := natsinfra.EnsureBuckets(ctx, js, settings, events.BucketClients, events.BucketAccounts)
	if err != nil {
		return err
	}

	clientBucket := kv.New[events.Client](buckets[events.BucketClients])
	_, err = clientBucket.Create(ctx, DemoClientID, events.Client{
		ID:     DemoClientID,
		Name:   "StreamCo TV",
		Public: true,
		Scopes: []string{"profile", issuer.ScopeOfflineAccess},
		Grants: []string{oauth.GrantTypeDeviceCode, oauth.GrantTypeRefreshToken},
	})
	if err != nil && !errors.Is(err, kv.ErrExists) {
		return err
	}

	store := accounts.NewStore(kv.New[events.Account](buckets[events.BucketAccounts]), passwordCost)
	if _, err := store.Create(ctx, DemoUsername, DemoPassword); err != nil && !errors.Is(err, kv.ErrExists) {
		return err
	}
	return nil
}
