package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/oauth"
)

func clientBucket(t *testing.T) *kv.Bucket[events.Client] {
	t.Helper()
	srv, err := natsinfra.StartEmbedded(natsinfra.EmbeddedConfig{StoreDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := natsinfra.Connect(srv.ClientURL(), "admin-test", zerolog.Nop(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	raw, err := natsinfra.EnsureBucket(t.Context(), js, events.BucketClients, natsinfra.Settings{})
	if err != nil {
		t.Fatalf("bucket: %v", err)
	}
	return kv.New[events.Client](raw)
}

func run(t *testing.T, bucket *kv.Bucket[events.Client], args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := runClients(ctx, bucket, args[0], args[1:], &out)
	return out.String(), err
}

func TestClientsLifecycle(t *testing.T) {
	bucket := clientBucket(t)

	out, err := run(t, bucket, "create", "--id", "console", "--name", "Console", "--confidential",
		"--scopes", "profile,offline_access", "--grants", "device_code,refresh_token", "--interval", "7s",
		"--origins", "https://tv.example")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !strings.Contains(out, "client_secret: ") {
		t.Errorf("create printed no secret for a confidential client: %q", out)
	}

	c, _, err := bucket.Get(t.Context(), "console")
	if err != nil {
		t.Fatalf("read client: %v", err)
	}
	if c.Public || c.SecretHash == "" || strings.Contains(out, c.SecretHash) {
		t.Errorf("confidential client stored wrongly: public %v, hash set %v", c.Public, c.SecretHash != "")
	}
	if c.IntervalSeconds != 7 || len(c.Grants) != 2 || c.Grants[0] != oauth.GrantTypeDeviceCode || c.AllowedOrigins[0] != "https://tv.example" {
		t.Errorf("client stored as %+v", c)
	}

	if _, err := run(t, bucket, "update", "console", "--device-flow=false", "--name", "Game Console"); err != nil {
		t.Fatalf("update: %v", err)
	}
	c, _, _ = bucket.Get(t.Context(), "console")
	if !c.DeviceFlowDisabled || c.Name != "Game Console" || c.IntervalSeconds != 7 {
		t.Errorf("update changed the wrong fields: %+v", c)
	}

	list, err := run(t, bucket, "list")
	if err != nil || !strings.Contains(list, "console\tconfidential\tGame Console") {
		t.Errorf("list = %q, %v", list, err)
	}
	show, err := run(t, bucket, "show", "console")
	if err != nil || strings.Contains(show, "$2") {
		t.Errorf("show printed the secret hash or failed: %q, %v", show, err)
	}

	if _, err := run(t, bucket, "create", "--id", "console", "--name", "Again"); err == nil {
		t.Error("creating an existing client succeeded")
	}
	if _, err := run(t, bucket, "create", "--id", "bad", "--name", "Bad", "--grants", "password"); err == nil {
		t.Error("creating a client with an unknown grant succeeded")
	}
	if _, err := run(t, bucket, "create", "--id", "bad", "--name", "Bad", "--scopes", "offline_access"); err == nil {
		t.Error("creating a client with offline_access but no refresh grant succeeded")
	}
	if _, err := run(t, bucket, "delete", "console"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := run(t, bucket, "show", "console"); err == nil {
		t.Error("show found a deleted client")
	}
}
