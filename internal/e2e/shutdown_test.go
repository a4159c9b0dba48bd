package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/oauth"
)

// TestEdgeStopsGracefully stops an edge serving on a real listener while
// it holds polls and reads a request: the held polls are answered
// authorization_pending at once, the request in flight is answered in full,
// the edge stops taking connections, and the devices get their tokens
// through another edge.
func TestEdgeStopsGracefully(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)

	key, err := keyfile.Read(filepath.Join(sys.dataDir, "hash.key"))
	if err != nil {
		t.Fatalf("read hash key: %v", err)
	}
	nc, err := natsinfra.Connect(sys.stack.NATSURL(), "edge", zerolog.Nop())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	stopping, err := edge.New(nc, edge.Config{PublicURL: sys.URL, HashKey: key, PollInterval: time.Second, Now: sys.clock.Now}, zerolog.Nop())
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	if err := stopping.Start(t.Context()); err != nil {
		t.Fatalf("start edge: %v", err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := listener.Addr().String()
	ctx, stop := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- stopping.ServeListener(ctx, listener) }()

	// Three devices hold polls on the edge about to stop.
	const devices = 3
	var codes []oauth.DeviceAuthorizationResponse
	var answers []<-chan response
	for range devices {
		da := sys.authorize(devstack.DemoClientID, "profile")
		codes = append(codes, da)
		answers = append(answers, sys.pollInBackground("http://"+addr, devstack.DemoClientID, da.DeviceCode, 20*time.Second))
	}
	waitFor(t, 5*time.Second, "the polls to be held", func() bool {
		return metricValue(t, stopping.Metrics(), "deviceauth_edge_held_polls", nil) == devices
	})

	// A request whose body is still arriving when the stop begins. With
	// "Expect: 100-continue" the server says when the handler starts to
	// read the body, so the request is known to be in flight.
	inFlight, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer inFlight.Close()
	body := "client_id=" + devstack.DemoClientID + "&scope=profile"
	fmt.Fprintf(inFlight, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n",
		edge.PathDeviceAuthorization, addr, len(body))
	reader := bufio.NewReader(inFlight)
	continued, err := reader.ReadString('\n')
	if err != nil || !strings.Contains(continued, "100") {
		t.Fatalf("waiting for 100 Continue got %q, %v", continued, err)
	}
	if _, err := reader.ReadString('\n'); err != nil {
		t.Fatalf("read the end of 100 Continue: %v", err)
	}

	stopAt := time.Now()
	stop()
	for _, answer := range answers {
		select {
		case resp := <-answer:
			assertOAuthError(t, resp, http.StatusBadRequest, oauth.CodeAuthorizationPending)
		case <-time.After(5 * time.Second):
			t.Fatal("held poll not answered within 5s of the stop")
		}
	}
	if elapsed := time.Since(stopAt); elapsed > time.Second {
		t.Errorf("held polls answered %s after the stop, want at once", elapsed)
	}
	if err := stopping.Ready(t.Context()); err == nil {
		t.Error("stopping edge reports ready")
	}
	waitFor(t, 5*time.Second, "the edge to refuse new connections", func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})

	fmt.Fprint(inFlight, body)
	resp, err := http.ReadResponse(reader, nil)
	if err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("in-flight request: status %d, want 200", resp.StatusCode)
	}

	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ServeListener did not return within 15s of the stop")
	}
	if err := nc.Drain(); err != nil {
		t.Errorf("drain the edge's NATS connection: %v", err)
	}
	waitFor(t, 5*time.Second, "the drained connection to close", nc.IsClosed)

	// The devices poll again, now through the other edge.
	for _, da := range codes {
		sys.decide(da, "approve")
		sys.clock.Advance(2 * time.Second)
		resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 10*time.Second)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.Body), "access_token") {
			t.Errorf("poll through the other edge: status %d: %s", resp.StatusCode, resp.Body)
		}
	}
}
