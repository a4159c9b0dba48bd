// Package natsinfra connects to NATS, runs an embedded nats-server for the
// one-command default and for tests, and creates the stream and buckets that
// package events names, with the settings each needs.
package natsinfra

import (
	"context"
	"errors"
	"fmt"
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
	opts := []nats.Option{
		nats.Name(name),
		nats.CustomInboxPrefix(InboxPrefix(name)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("nats disconnected")
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

// EnsureStream creates or updates the stream of device-flow events.
// It retries while the cluster cannot yet answer (see Retry).
func EnsureStream(ctx context.Context, js jetstream.JetStream, s Settings) (jetstream.Stream, error) {
	var stream jetstream.Stream
	err := Retry(ctx, func(ctx context.Context) error {
		var err error
		cfg := streamConfig(s)
		cfg.Replicas = keptReplicas(ctx, js, cfg.Name, cfg.Replicas)
		stream, err = js.CreateOrUpdateStream(ctx, cfg)
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

// bucketTTL is how long a value lives after its last write; zero keeps it.
var bucketTTL = map[string]time.Duration{
	// Longer than any code lifetime plus the time a device may take to
	// collect an issued token.
	events.BucketCodes:         2 * time.Hour,
	events.BucketUserCodes:     2 * time.Hour,
	events.BucketSessions:      12 * time.Hour,
	events.BucketClients:       0,
	events.BucketAccounts:      0,
	events.BucketGrants:        0,
	events.BucketRefreshTokens: 0,
	events.BucketKeys:          0,
}

// EnsureBucket creates or updates one of the buckets named in package
// events. It retries while the cluster cannot yet answer (see Retry).
func EnsureBucket(ctx context.Context, js jetstream.JetStream, name string, s Settings) (jetstream.KeyValue, error) {
	ttl, known := bucketTTL[name]
	if !known {
		return nil, fmt.Errorf("natsinfra: unknown bucket %q", name)
	}

	var kv jetstream.KeyValue
	err := Retry(ctx, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:   name,
			History:  1,
			TTL:      ttl,
			Storage:  jetstream.FileStorage,
			Replicas: keptReplicas(ctx, js, "KV_"+name, s.replicas()),
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
