// Package natsinfra connects to NATS, runs an embedded nats-server for the
// one-command default and for tests, and creates the stream and buckets that
// package events names, with the settings each needs.
package natsinfra

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
)

// EmbeddedConfig configures an embedded nats-server.
type EmbeddedConfig struct {
	// StoreDir is where JetStream keeps its files. It is created if missing.
	StoreDir string
	// Host and Port are the client listener. Port -1 picks a free port.
	Host string
	Port int
}

// StartEmbedded starts a nats-server with JetStream inside this process and
// waits until it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsinfra: embedded server needs a store directory")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}

	opts := &server.Options{
		ServerName: "embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsinfra: create embedded server: %w", err)
	}

	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("natsinfra: embedded server not ready after 10s")
	}
	return srv, nil
}

// Connect opens a connection that reconnects forever, logging each change
// of connection state. url may list several servers, comma-separated.
//
// Replies go to the inbox prefix InboxPrefix(name) rather than the shared
// "_INBOX", so nats.conf can let each service subscribe only to its own
// replies.
func Connect(url, name string, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	log = log.With().Str("connection", name).Logger()
	opts := []nats.Option{
		nats.Name(name),
		nats.CustomInboxPrefix(InboxPrefix(name)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			// A nil error is a disconnect this process asked for.
			if err == nil {
				log.Debug().Msg("nats connection closed")
				return
			}
			log.Warn().Err(err).Msg("nats disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil && !errors.Is(err, nats.ErrSlowConsumer) {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
	opts = append(opts, extra...)

	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsinfra: connect to %s: %w", url, err)
	}
	return nc, nil
}

// keptReplicas returns the replica count of the stream when it exists, and
// want otherwise. The first service to start sets the count; one started
// later with another --replicas, such as the default 1 on a cluster, must
// not quietly rescale a running stream and lose its copies. Changing the
// count is an operator's decision, made with the nats CLI.
func keptReplicas(ctx context.Context, js jetstream.JetStream, stream string, want int) int {
	existing, err := js.Stream(ctx, stream)
	if err != nil {
		return want
	}
	return existing.CachedInfo().Config.Replicas
}

// InboxPrefix returns the reply subject prefix of the service called name.
func InboxPrefix(name string) string { return "_INBOX_" + name }

// Settings are the storage settings shared by the stream and every bucket.
type Settings struct {
	// Replicas is the number of copies of each stream and bucket: 1 for a
	// single server, 3 for a three-node cluster.
	Replicas int
}

func (s Settings) replicas() int {
	if s.Replicas < 1 {
		return 1
	}
	return s.Replicas
}

// EnsureStream creates or updates the stream of device-flow events. A
// stream that already has the settings is left alone (see unchanged). It
// retries while the cluster cannot respond yet (see Retry).
func EnsureStream(ctx context.Context, js jetstream.JetStream, s Settings) (jetstream.Stream, error) {
	var stream jetstream.Stream
	err := Retry(ctx, func(ctx context.Context) error {
		want := streamConfig(s)
		want.Replicas = keptReplicas(ctx, js, want.Name, want.Replicas)
		if existing, err := js.Stream(ctx, want.Name); err == nil && unchanged(existing, want) {
			stream = existing
			return nil
		}
		var err error
		stream, err = js.CreateOrUpdateStream(ctx, want)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natsinfra: ensure stream %s: %w", events.StreamDevice, err)
	}
	return stream, nil
}

func streamConfig(s Settings) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.StreamDevice,
		Description: "Device authorization events: requests, decisions, approvals.",
		Subjects:    []string{events.SubjectAll},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    s.replicas(),
		// The approver publishes each approval with the code id as its
		// message id, so a redelivered decision does not queue a second
		// grant within this window.
		Duplicates: 10 * time.Minute,
	}
}

// MaxRefreshTokenTTL is the longest refresh token lifetime the buckets are
// sized for.
const MaxRefreshTokenTTL = 90 * 24 * time.Hour

// unchanged reports whether stream already has the settings of want that
// this package sets.
//
// Services call the Ensure functions at every start, often at the same time.
// nats-server v2.15.3 updates a stream's store even when the configuration
// is the same, and that update races with a consumer being created on the
// stream by another service (the race detector reports it in
// fileStore.UpdateConfig and fileStore.ConsumerStore). Skipping the needless
// update avoids the race, and a real change of settings still updates.
func unchanged(stream jetstream.Stream, want jetstream.StreamConfig) bool {
	have := stream.CachedInfo().Config
	return slices.Equal(have.Subjects, want.Subjects) &&
		have.Description == want.Description &&
		have.Retention == want.Retention &&
		have.MaxAge == want.MaxAge &&
		have.Storage == want.Storage &&
		have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates
}

// bucketTTL is how long a value lives after its last write; zero keeps it.
var bucketTTL = map[string]time.Duration{
	// Longer than any code lifetime plus the time a device may take to
	// collect an issued token.
	events.BucketCodes:     2 * time.Hour,
	events.BucketUserCodes: 2 * time.Hour,
	events.BucketSessions:  12 * time.Hour,
	events.BucketClients:   0,
	events.BucketAccounts:  0,
	events.BucketGrants:    0,
	// Longer than the longest refresh token lifetime the issuer accepts, so
	// a rotated token is still known, and its reuse detected, until it
	// would have expired.
	events.BucketRefreshTokens: MaxRefreshTokenTTL + 24*time.Hour,
	events.BucketKeys:          0,
	// At least the longest rate limit window: a counter is written in
	// its window only, so it is gone an hour after its last failure.
	events.BucketRateLimits: RateLimitTTL,
}

// RateLimitTTL is how long a rate limit counter lives after its last write,
// and so the longest window a limit may have.
const RateLimitTTL = time.Hour

// EnsureBucket creates or updates one of the buckets named in package
// events. A bucket that already has the settings is left alone (see
// unchanged). It retries while the cluster cannot respond yet (see Retry).
func EnsureBucket(ctx context.Context, js jetstream.JetStream, name string, s Settings) (jetstream.KeyValue, error) {
	ttl, known := bucketTTL[name]
	if !known {
		return nil, fmt.Errorf("natsinfra: unknown bucket %q", name)
	}

	var kv jetstream.KeyValue
	err := Retry(ctx, func(ctx context.Context) error {
		replicas := keptReplicas(ctx, js, "KV_"+name, s.replicas())
		// A KV bucket is the stream "KV_<bucket>".
		if stream, err := js.Stream(ctx, "KV_"+name); err == nil {
			have := stream.CachedInfo().Config
			if have.MaxMsgsPerSubject == 1 && have.MaxAge == ttl &&
				have.Storage == jetstream.FileStorage && have.Replicas == replicas {
				var err error
				kv, err = js.KeyValue(ctx, name)
				return err
			}
		}

		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:   name,
			History:  1,
			TTL:      ttl,
			Storage:  jetstream.FileStorage,
			Replicas: replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natsinfra: ensure bucket %s: %w", name, err)
	}
	return kv, nil
}

// EnsureBuckets ensures each named bucket and returns them by name.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, s Settings, names ...string) (map[string]jetstream.KeyValue, error) {
	buckets := make(map[string]jetstream.KeyValue, len(names))
	for _, name := range names {
		kv, err := EnsureBucket(ctx, js, name, s)
		if err != nil {
			return nil, err
		}
		buckets[name] = kv
	}
	return buckets, nil
}
