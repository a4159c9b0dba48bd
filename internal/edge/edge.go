// Package edge is the HTTP side of the server: the OAuth endpoints a device
// calls, the metadata and keys a resource server reads, and the pages a
// person uses on a phone. It keeps no state a grant depends on: codes,
// sessions and tokens live in JetStream KV, and decisions travel as events,
// so any edge can serve any request.
package edge

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accesstoken"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/clients"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/grants"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/ops"
)

// Config configures an edge.
type Config struct {
	// Addr is the listen address of Run.
	Addr string
	// PublicURL is the base URL devices and browsers reach this service at.
	// The issuer identifier and every advertised address derive from it,
	// never from a request's Host header.
	PublicURL string
	Storage   natsinfra.Settings
	// HashKey keys the hashes under which codes, sessions and refresh tokens
	// are stored. Every edge and the issuer must share it.
	HashKey []byte

	// CodeLifetime and PollInterval apply to clients that set none.
	// Defaults: 10 minutes and 5 seconds.
	CodeLifetime time.Duration
	PollInterval time.Duration
	// MaxHold caps the hold a client asks for with "Prefer: wait". Zero
	// means 20 seconds, well under the 60-second idle timeout common to
	// load balancers and proxies. A negative value disables holding.
	MaxHold time.Duration
	// PollTolerance is the most a poll may arrive earlier than the interval
	// and still not get slow_down, to absorb network and queueing jitter.
	// A code's tolerance is also at most a fifth of its interval. Zero
	// means 1 second.
	PollTolerance time.Duration
	// SessionLifetime is how long a phone stays signed in. Zero means
	// 12 hours, the lifetime of the sessions bucket.
	SessionLifetime time.Duration
	// ReplayWindow is how long after a code's redemption the same client
	// may present the device code again and get the identical token
	// response, for a device whose response was lost in transit. A
	// presentation after the window revokes the grant. Zero means
	// 15 seconds; a negative value turns replays off, so any second
	// presentation revokes.
	ReplayWindow time.Duration

	// Limits are the abuse limits of the phone pages and the approval API.
	Limits Limits

	// PasswordCost is the bcrypt cost of password hashes. Zero means
	// bcrypt.DefaultCost; tests lower it to save time.
	PasswordCost int

	// Now is the clock and Random the source of codes. Nil means time.Now
	// and crypto/rand.
	Now    func() time.Time
	Random io.Reader
}

func (c *Config) setDefaults() {
	if c.CodeLifetime == 0 {
		c.CodeLifetime = 10 * time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = 5 * time.Second
	}
	if c.MaxHold == 0 {
		c.MaxHold = 20 * time.Second
	}
	if c.PollTolerance == 0 {
		c.PollTolerance = time.Second
	}
	if c.SessionLifetime == 0 {
		c.SessionLifetime = 12 * time.Hour
	}
	c.Limits.setDefaults()
	if c.ReplayWindow == 0 {
		c.ReplayWindow = 15 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Random == nil {
		c.Random = rand.Reader
	}
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("public URL %q must be an absolute http or https URL without query or fragment", c.PublicURL))
	}
	if len(c.HashKey) < codes.MinKeyBytes {
		errs = append(errs, fmt.Errorf("hash key has %d bytes, want at least %d", len(c.HashKey), codes.MinKeyBytes))
	}
	if c.CodeLifetime < time.Minute || c.CodeLifetime > 30*time.Minute {
		errs = append(errs, fmt.Errorf("code lifetime %s must be between 1m and 30m", c.CodeLifetime))
	}
	if c.PollInterval < time.Second {
		errs = append(errs, fmt.Errorf("poll interval %s must be at least 1s", c.PollInterval))
	}
	if c.ReplayWindow > 2*time.Minute {
		errs = append(errs, fmt.Errorf("replay window %s must be at most 2m: a longer one keeps a stolen device code useful for longer", c.ReplayWindow))
	}
	if c.MaxHold > 55*time.Second {
		errs = append(errs, fmt.Errorf("max hold %s must be at most 55s to stay under common proxy idle timeouts", c.MaxHold))
	}
	errs = append(errs, c.Limits.validate()...)
	return errors.Join(errs...)
}

// Edge serves HTTP.
type Edge struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	hasher *codes.Hasher
	log    zerolog.Logger
	pages  *pages

	issuer string
	// origin is the Origin header browsers send for the edge's own pages.
	origin       string
	secureCookie bool

	clients   *clients.Registry
	accounts  *accounts.Store
	codes     *kv.Bucket[events.CodeRecord]
	userCodes *kv.Bucket[string]
	sessions  *kv.Bucket[events.Session]
	// keySet is the published key set as the watch last delivered it, served
	// as the JWKS without a read per request. Nil until an issuer published.
	keySet   atomic.Pointer[events.KeySet]
	grants   *kv.Bucket[events.Grant]
	refresh  *kv.Bucket[events.RefreshToken]
	revoker  *grants.Revoker
	verifier *accesstoken.Verifier
	limiter  *limiter

	registry *prometheus.Registry
	metrics  edgeMetrics

	// closing is closed when the edge begins to stop, which ends every
	// held poll at once.
	closing   chan struct{}
	closeOnce sync.Once
	polls     *pollRegister
	// resumeQueue and resume serve the connections of parked polls after
	// their response (see park.go). resumed is closed once resume has shut
	// down.
	resumeQueue *connQueue
	resume      *http.Server
	resumed     chan struct{}
}

// New returns an edge that uses nc. Call Start before serving Handler.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Edge, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("edge: invalid configuration: %w", err)
	}
	hasher, err := codes.NewHasher(cfg.HashKey)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	pages, err := loadPages()
	if err != nil {
		return nil, err
	}

	registry := prometheus.NewRegistry()
	return &Edge{
		registry:     registry,
		metrics:      newEdgeMetrics(registry),
		cfg:          cfg,
		nc:           nc,
		js:           js,
		hasher:       hasher,
		log:          log.With().Str("service", "edge").Logger(),
		pages:        pages,
		issuer:       strings.TrimSuffix(cfg.PublicURL, "/"),
		origin:       originOf(cfg.PublicURL),
		secureCookie: strings.HasPrefix(cfg.PublicURL, "https://"),
		closing:      make(chan struct{}),
		polls:        newPollRegister(),
		resumeQueue:  newConnQueue(),
		resumed:      make(chan struct{}),
	}, nil
}

// Start creates the stream and buckets the edge needs and loads the clients.
// The client registry follows changes until ctx ends.
func (e *Edge) Start(ctx context.Context) error {
	if _, err := natsinfra.EnsureStream(ctx, e.js, e.cfg.Storage); err != nil {
		return err
	}
	buckets, err := natsinfra.EnsureBuckets(ctx, e.js, e.cfg.Storage,
		events.BucketCodes, events.BucketUserCodes, events.BucketClients,
		events.BucketAccounts, events.BucketSessions, events.BucketKeys,
		events.BucketGrants, events.BucketRefreshTokens, events.BucketRateLimits)
	if err != nil {
		return err
	}

	e.codes = kv.NewLeaderRead[events.CodeRecord](buckets[events.BucketCodes], e.nc)
	e.userCodes = kv.New[string](buckets[events.BucketUserCodes])
	e.sessions = kv.New[events.Session](buckets[events.BucketSessions])
	e.grants = kv.New[events.Grant](buckets[events.BucketGrants])
	e.refresh = kv.New[events.RefreshToken](buckets[events.BucketRefreshTokens])
	e.revoker = &grants.Revoker{
		Grants:  e.grants,
		Refresh: e.refresh,
		JS:      e.js,
		Now:     e.cfg.Now,
	}
	e.limiter = &limiter{
		bucket: kv.New[int](buckets[events.BucketRateLimits]),
		id:     e.hasher.RateLimitID,
		now:    e.cfg.Now,
	}
	e.accounts = accounts.NewStore(kv.New[events.Account](buckets[events.BucketAccounts]), e.cfg.PasswordCost)
	clientBucket := kv.New[events.Client](buckets[events.BucketClients]).OnDecodeError(func(key string, err error) {
		e.log.Error().Err(err).Str("client_id", key).Msg("client record does not decode; the client is ignored")
	})
	e.clients, err = clients.Watch(ctx, clientBucket)
	if err != nil {
		return err
	}

	e.verifier = accesstoken.NewVerifier(e.issuer, e.cfg.Now)
	go e.dispatchChanges(ctx)
	e.resume = e.newServer()
	go func() { _ = e.resume.Serve(e.resumeQueue) }()

	keyBucket := kv.New[events.KeySet](buckets[events.BucketKeys])
	return keyBucket.Watch(ctx, func(key string, set events.KeySet, deleted bool) {
		if key != events.KeySetKey || deleted {
			return
		}
		e.keySet.Store(&set)
		if err := e.verifier.SetKeys(set); err != nil {
			e.log.Warn().Err(err).Msg("some published signing keys are unusable")
		}
	})
}

// Metrics returns the edge's own registry.
func (e *Edge) Metrics() *prometheus.Registry { return e.registry }

// Ready reports whether the edge should get traffic: it is not stopping, and
// NATS and the buckets every request needs are reachable.
func (e *Edge) Ready(ctx context.Context) error {
	select {
	case <-e.closing:
		return errStopping
	default:
	}
	return ops.NATSReady(e.nc, e.js, events.BucketCodes, events.BucketUserCodes,
		events.BucketClients, events.BucketSessions)(ctx)
}

var errStopping = errors.New("edge is stopping")

// Close ends every held poll with authorization_pending, so devices poll
// again elsewhere, and begins a graceful shutdown of the connections that
// held polls handed back. It is safe to call more than once.
func (e *Edge) Close() {
	e.closeOnce.Do(func() {
		close(e.closing)
		e.stopHeld()
		_ = e.resumeQueue.Close()
		go func() {
			defer close(e.resumed)
			if e.resume == nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			if err := e.resume.Shutdown(ctx); err != nil {
				_ = e.resume.Close()
			}
		}()
	})
}

// idleTimeout is how long a kept-alive connection may wait for its next
// request.
const idleTimeout = 90 * time.Second

// shutdownTimeout bounds how long a stopping edge waits for requests in
// flight.
const shutdownTimeout = 10 * time.Second

// Run starts the edge and serves on cfg.Addr until ctx ends.
func (e *Edge) Run(ctx context.Context) error {
	if err := e.Start(ctx); err != nil {
		return err
	}
	return e.Serve(ctx, e.cfg.Addr)
}

// Serve serves a started edge on addr until ctx ends, then answers held
// polls, finishes in-flight requests for up to 10 seconds, and returns.
func (e *Edge) Serve(ctx context.Context, addr string) error {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("edge: listen on %s: %w", addr, err)
	}
	return e.ServeListener(ctx, listener)
}

// ServeListener is Serve on a listener the caller opened. It closes the
// listener.
func (e *Edge) ServeListener(ctx context.Context, listener net.Listener) error {
	srv := e.newServer()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(listener) }()
	e.log.Info().Str("addr", listener.Addr().String()).Str("public_url", e.issuer).Msg("edge serving")

	select {
	case err := <-serveErr:
		return fmt.Errorf("edge: serve: %w", err)
	case <-ctx.Done():
	}

	e.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("edge: shutdown: %w", err)
	}
	<-e.resumed
	e.log.Info().Msg("edge stopped")
	return nil
}

// newServer returns the HTTP server of the edge's listener and of its
// resumed connections.
func (e *Edge) newServer() *http.Server {
	return &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// A held poll that cannot be parked waits in its handler for up
		// to MaxHold, so writes get that plus a margin.
		WriteTimeout:   e.cfg.MaxHold + 15*time.Second,
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: 16 << 10,
	}
}

func (e *Edge) url(path string) string { return e.issuer + path }
