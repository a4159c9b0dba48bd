package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// newTransport returns a transport that keeps one connection per concurrent
// request alive and binds each new connection to the next of sources in
// turn. A source address gives the connection its own range of client
// ports: about 28,000 with Linux's default ip_local_port_range.
func newTransport(conns int, sources []netip.Addr) *http.Transport {
	var next atomic.Uint64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		if len(sources) > 0 {
			src := sources[next.Add(1)%uint64(len(sources))]
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// noRedirects keeps every request on the base URL: the load never follows a
// redirect, whatever the server names.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// result is one HTTP exchange.
type result struct {
	status int
	header http.Header
	body   []byte
	// done is when the last byte of the body was read.
	done time.Time
}

// postForm posts form to baseURL+path and reads the whole response.
func postForm(ctx context.Context, client *http.Client, baseURL, path string, form url.Values, header http.Header) (result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return result{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for name, values := range header {
		req.Header[name] = values
	}
	return do(client, req)
}

func do(client *http.Client, req *http.Request) (result, error) {
	resp, err := client.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return result{}, err
	}
	return result{status: resp.StatusCode, header: resp.Header, body: body, done: time.Now()}, nil
}

// oauthError returns the "error" member of an OAuth error response, or ""
// when body is not one.
func oauthError(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error
}

// responseKind names an unexpected response for the error counts, such as
// "token: 400 invalid_grant" or "consent: 410".
func responseKind(step string, res result) string {
	if code := oauthError(res.body); code != "" {
		return fmt.Sprintf("%s: %d %s", step, res.status, code)
	}
	return fmt.Sprintf("%s: %d", step, res.status)
}

// transportKind names a failed exchange for the error counts by its cause,
// so that thousands of failures group into a few lines.
func transportKind(step string, err error) string {
	var cause string
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		cause = "timed out"
	case errors.Is(err, syscall.ECONNREFUSED):
		cause = "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		cause = "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		cause = "no free client port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		cause = "too many open files"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		cause = "connection closed by the server"
	default:
		cause = "other: " + err.Error()
		if len(cause) > 120 {
			cause = cause[:120]
		}
	}
	return step + ": transport: " + cause
}
