package natsinfra

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
)

// TestEnsureSkipsUnchangedSettings checks that a second service starting
// against existing storage sends no update requests, which would race with
// consumers being created, and that changed settings are still applied.
func TestEnsureSkipsUnchangedSettings(t *testing.T) {
	srv, err := StartEmbedded(EmbeddedConfig{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatalf("start embedded server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := Connect(srv.ClientURL(), "test", zerolog.Nop())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}

	watcher, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect the watcher: %v", err)
	}
	t.Cleanup(watcher.Close)
	sub, err := watcher.SubscribeSync("$JS.API.STREAM.UPDATE.>")
	if err != nil {
		t.Fatalf("subscribe to update requests: %v", err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}

	if _, err := EnsureStream(t.Context(), js, Settings{}); err != nil {
		t.Fatalf("first EnsureStream: %v", err)
	}
	if _, err := EnsureBucket(t.Context(), js, events.BucketCodes, Settings{}); err != nil {
		t.Fatalf("first EnsureBucket: %v", err)
	}
	updates := 0
	countUpdates := func() int {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if err := watcher.Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
		for {
			if _, err := sub.NextMsg(0); err != nil {
				return updates
			}
			updates++
		}
	}
	before := countUpdates()

	if _, err := EnsureStream(t.Context(), js, Settings{}); err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	kv, err := EnsureBucket(t.Context(), js, events.BucketCodes, Settings{})
	if err != nil {
		t.Fatalf("second EnsureBucket: %v", err)
	}
	if kv.Bucket() != events.BucketCodes {
		t.Errorf("second EnsureBucket returned bucket %q, want %q", kv.Bucket(), events.BucketCodes)
	}
	if got := countUpdates() - before; got != 0 {
		t.Errorf("%d update requests for unchanged settings, want 0", got)
	}

	// A changed setting is applied.
	stream, err := js.Stream(t.Context(), events.StreamDevice)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxAge /= 2
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatalf("change the stream: %v", err)
	}
	ensured, err := EnsureStream(t.Context(), js, Settings{})
	if err != nil {
		t.Fatalf("EnsureStream after a change: %v", err)
	}
	if got := ensured.CachedInfo().Config.MaxAge; got != 2*cfg.MaxAge {
		t.Errorf("MaxAge after EnsureStream is %s, want the original %s", got, 2*cfg.MaxAge)
	}
}
