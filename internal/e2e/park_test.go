package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/oauth"
)

// parkingServer serves the system's edge on a server of its own that
// counts the connections held polls take over.
func parkingServer(t *testing.T, sys *system) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	parked := new(atomic.Int32)
	srv := httptest.NewUnstartedServer(sys.stack.Edge.Handler())
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateHijacked {
			parked.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, parked
}

// TestHeldPollsParkTheirConnections holds several polls and expects each
// connection to leave net/http, so no request goroutine waits. It then
// approves the codes and expects every token on the connection its poll
// came on, and the next request on that connection served as usual.
func TestHeldPollsParkTheirConnections(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	srv, parked := parkingServer(t, sys)

	const devices = 4
	type device struct {
		da     oauth.DeviceAuthorizationResponse
		client *http.Client
		answer chan response
	}
	var fleet []device
	for range devices {
		d := device{
			da:     sys.authorize(devstack.DemoClientID, "profile"),
			client: &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}},
			answer: make(chan response, 1),
		}
		t.Cleanup(d.client.CloseIdleConnections)
		go func() {
			d.answer <- postToken(t.Context(), d.client, srv.URL, devstack.DemoClientID, d.da.DeviceCode, "wait=20")
		}()
		fleet = append(fleet, d)
	}
	waitFor(t, 5*time.Second, "every poll to be held", func() bool {
		return metricValue(t, sys.stack.Edge.Metrics(), "deviceauth_edge_held_polls", nil) == devices
	})
	if got := parked.Load(); got != devices {
		t.Errorf("%d connections taken over for %d held polls", got, devices)
	}

	for _, d := range fleet {
		sys.decide(d.da, "approve")
		resp := <-d.answer
		if resp.StatusCode != http.StatusOK || resp.json(t)["access_token"] == nil {
			t.Fatalf("held poll: status %d: %s", resp.StatusCode, resp.Body)
		}
		if got := resp.Header.Get("Preference-Applied"); got != "wait=20" {
			t.Errorf("Preference-Applied %q, want wait=20", got)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", got)
		}

		// The connection is kept alive and serves the next request.
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
		again := postToken(httptrace.WithClientTrace(t.Context(), trace), d.client, srv.URL, devstack.DemoClientID, d.da.DeviceCode, "")
		if !reused {
			t.Error("the request after a held poll opened a new connection")
		}
		if again.StatusCode != http.StatusOK {
			t.Errorf("replay on the resumed connection: status %d: %s", again.StatusCode, again.Body)
		}
	}
	waitFor(t, 5*time.Second, "the held polls gauge to return to zero", func() bool {
		return metricValue(t, sys.stack.Edge.Metrics(), "deviceauth_edge_held_polls", nil) == 0
	})
	if got := metricValue(t, sys.stack.Edge.Metrics(), "deviceauth_edge_polls_total", map[string]string{"outcome": "token"}); got != devices {
		t.Errorf("%v polls counted as answered with a token, want %d", got, devices)
	}
}

// TestParkedPollKeepsPipelinedRequest sends a second request right behind
// a held poll on one connection. The edge must respond to the second after
// the token, from the bytes it had read ahead.
func TestParkedPollKeepsPipelinedRequest(t *testing.T) {
	t.Parallel()
	raw := startRawPoll(t)
	fmt.Fprint(raw.conn, rawTokenRequest(raw.host, raw.da.DeviceCode, "Prefer: wait=20\r\n")+
		"GET "+edge.PathHealth+" HTTP/1.1\r\nHost: "+raw.host+"\r\n\r\n")
	raw.waitHeld()
	if raw.parked.Load() != 1 {
		t.Fatal("the held poll's connection was not taken over")
	}
	raw.sys.decide(raw.da, "approve")

	r := bufio.NewReader(raw.conn)
	token := readRawResponse(t, r)
	if token.StatusCode != http.StatusOK || !strings.Contains(string(token.Body), "access_token") {
		t.Fatalf("held poll: status %d: %s", token.StatusCode, token.Body)
	}
	health := readRawResponse(t, r)
	if health.StatusCode != http.StatusOK {
		t.Fatalf("pipelined health check: status %d: %s", health.StatusCode, health.Body)
	}
}

// TestParkedPollHonoursConnectionClose expects the edge to close a parked
// connection after the response when the client requested it.
func TestParkedPollHonoursConnectionClose(t *testing.T) {
	t.Parallel()
	raw := startRawPoll(t)
	fmt.Fprint(raw.conn, rawTokenRequest(raw.host, raw.da.DeviceCode, "Prefer: wait=1\r\nConnection: close\r\n"))

	r := bufio.NewReader(raw.conn)
	resp := readRawResponse(t, r)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(resp.Body), oauth.CodeAuthorizationPending) {
		t.Fatalf("held poll: status %d: %s", resp.StatusCode, resp.Body)
	}
	if !resp.Close {
		t.Error("the response has no Connection: close")
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want the connection closed", err)
	}
}

// TestHeldPollWaitsInHandlerOverHTTP10 holds a poll on an HTTP/1.0
// connection, which the edge cannot hand back to net/http, so the poll
// waits in its handler and gets the same response.
func TestHeldPollWaitsInHandlerOverHTTP10(t *testing.T) {
	t.Parallel()
	raw := startRawPoll(t)
	request := strings.Replace(rawTokenRequest(raw.host, raw.da.DeviceCode, "Prefer: wait=20\r\n"), "HTTP/1.1", "HTTP/1.0", 1)
	fmt.Fprint(raw.conn, request)
	raw.waitHeld()
	if got := raw.parked.Load(); got != 0 {
		t.Errorf("%d connections taken over, want none for HTTP/1.0", got)
	}
	raw.sys.decide(raw.da, "approve")

	resp := readRawResponse(t, bufio.NewReader(raw.conn))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.Body), "access_token") {
		t.Fatalf("held poll: status %d: %s", resp.StatusCode, resp.Body)
	}
	if got := resp.Header.Get("Preference-Applied"); got != "wait=20" {
		t.Errorf("Preference-Applied %q, want wait=20", got)
	}
}

// rawPoll is a system, a device code, and a raw connection to a parking
// server of the system's edge.
type rawPoll struct {
	t      *testing.T
	sys    *system
	parked *atomic.Int32
	da     oauth.DeviceAuthorizationResponse
	conn   net.Conn
	host   string
}

func startRawPoll(t *testing.T) rawPoll {
	t.Helper()
	sys := startSystem(t)
	srv, parked := parkingServer(t, sys)
	return rawPoll{
		t:      t,
		sys:    sys,
		parked: parked,
		da:     sys.authorize(devstack.DemoClientID, "profile"),
		conn:   dialRaw(t, srv.URL),
		host:   strings.TrimPrefix(srv.URL, "http://"),
	}
}

// waitHeld waits until the edge holds the poll.
func (raw rawPoll) waitHeld() {
	raw.t.Helper()
	waitFor(raw.t, 5*time.Second, "the poll to be held", func() bool {
		return metricValue(raw.t, raw.sys.stack.Edge.Metrics(), "deviceauth_edge_held_polls", nil) == 1
	})
}

// rawTokenRequest is an HTTP/1.1 token request for deviceCode with extra
// header lines.
func rawTokenRequest(host, deviceCode, extra string) string {
	body := deviceCodeForm(devstack.DemoClientID, deviceCode).Encode()
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n%s\r\n%s",
		edge.PathToken, host, len(body), extra, body)
}

func dialRaw(t *testing.T, base string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return conn
}

// rawResponse is a response read from a raw connection.
type rawResponse struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	Close      bool
}

func readRawResponse(t *testing.T, r *bufio.Reader) rawResponse {
	t.Helper()
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return rawResponse{StatusCode: resp.StatusCode, Header: resp.Header, Body: body, Close: resp.Close}
}

// TestResumedConnectionWaitsLikeKeptAlive lets a connection stay idle after
// a parked poll's response for longer than the edge's 5-second header
// timeout, as a device waiting out its interval does, and expects the next
// poll on it to be served.
func TestResumedConnectionWaitsLikeKeptAlive(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	srv, parked := parkingServer(t, sys)
	da := sys.authorize(devstack.DemoClientID, "profile")
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	t.Cleanup(client.CloseIdleConnections)

	first := postToken(t.Context(), client, srv.URL, devstack.DemoClientID, da.DeviceCode, "wait=1")
	if first.StatusCode != http.StatusBadRequest || first.errorCode(t) != oauth.CodeAuthorizationPending {
		t.Fatalf("held poll: status %d: %s", first.StatusCode, first.Body)
	}
	if parked.Load() != 1 {
		t.Fatal("the held poll's connection was not taken over")
	}

	time.Sleep(6 * time.Second)
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
	second := postToken(httptrace.WithClientTrace(t.Context(), trace), client, srv.URL, devstack.DemoClientID, da.DeviceCode, "")
	if !reused {
		t.Error("the second poll opened a new connection")
	}
	if second.StatusCode != http.StatusBadRequest || second.errorCode(t) != oauth.CodeAuthorizationPending {
		t.Errorf("second poll: status %d: %s", second.StatusCode, second.Body)
	}
}

// TestParkedPollNoticesClosedClient closes the connection of a parked poll
// and then approves the code. The parked poll must not redeem the code for
// the closed connection, so the device's next poll gets the token.
func TestParkedPollNoticesClosedClient(t *testing.T) {
	t.Parallel()
	raw := startRawPoll(t)
	fmt.Fprint(raw.conn, rawTokenRequest(raw.host, raw.da.DeviceCode, "Prefer: wait=20\r\n"))
	raw.waitHeld()
	raw.conn.Close()

	raw.sys.decide(raw.da, "approve")
	metrics := raw.sys.stack.Edge.Metrics()
	waitFor(t, 5*time.Second, "the parked poll to count its client as gone", func() bool {
		return metricValue(t, metrics, "deviceauth_edge_polls_total", map[string]string{"outcome": "client_gone"}) == 1
	})
	if got := metricValue(t, metrics, "deviceauth_edge_held_polls", nil); got != 0 {
		t.Errorf("held polls gauge %v after the client left, want 0", got)
	}

	next := raw.sys.poll(devstack.DemoClientID, raw.da.DeviceCode, 0)
	if next.StatusCode != http.StatusOK || next.json(t)["access_token"] == nil {
		t.Errorf("poll after the closed one: status %d: %s", next.StatusCode, next.Body)
	}
}

// TestHeldPollEndsWhenCodeExpires holds a poll on a code with two seconds
// left and expects expired_token then, not when the 20-second hold ends.
func TestHeldPollEndsWhenCodeExpires(t *testing.T) {
	t.Parallel()
	sys := startSystem(t)
	da := sys.authorize(devstack.DemoClientID, "profile")
	sys.clock.Advance(time.Duration(da.ExpiresIn)*time.Second - 2*time.Second)

	started := time.Now()
	resp := sys.poll(devstack.DemoClientID, da.DeviceCode, 20*time.Second)
	if got := resp.errorCode(t); got != oauth.CodeExpiredToken {
		t.Errorf("held poll on an expiring code: %q (status %d), want expired_token", got, resp.StatusCode)
	}
	if took := time.Since(started); took > 10*time.Second {
		t.Errorf("held poll took %s, want it to end when the code expired, about 2s", took.Round(time.Millisecond))
	}
}
