package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// cluster is three nats-servers routed to each other on loopback, each
// with JetStream and its own store directory.
type cluster struct {
	servers []*server.Server
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	const size = 3
	routePorts := make([]int, size)
	for i := range routePorts {
		routePorts[i] = freePort(t)
	}
	var routes []string
	for _, port := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", port))
	}

	c := &cluster{}
	base := t.TempDir()
	for i := range size {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   filepath.Join(base, fmt.Sprintf("n%d", i+1)),
			NoSigs:     true,
			NoLog:      true,
			Cluster: server.ClusterOpts{
				Name: "deviceauth-test",
				Host: "127.0.0.1",
				Port: routePorts[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("create server %d: %v", i+1, err)
		}
		go srv.Start()
		c.servers = append(c.servers, srv)
	}
	t.Cleanup(func() {
		for _, srv := range c.servers {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	})
	for i, srv := range c.servers {
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server %d not ready after 10s", i+1)
		}
	}

	// The cluster can place three replicas once the three servers have
	// elected a meta leader and each has reported in.
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	waitFor(t, 30*time.Second, "JetStream to place three replicas", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}, Replicas: 3})
		return err == nil
	})
	if err := js.DeleteStream(t.Context(), "PROBE"); err != nil {
		t.Fatalf("delete the probe stream: %v", err)
	}
	return c
}

// URL lists every server, as a service is configured in a cluster.
func (c *cluster) URL() string {
	var urls []string
	for _, srv := range c.servers {
		urls = append(urls, srv.ClientURL())
	}
	return strings.Join(urls, ",")
}

// freePort returns a port nothing listens on at the moment.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
