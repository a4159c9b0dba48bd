// Package ops serves what operators probe on every service: Prometheus
// metrics at /metrics, liveness at /healthz, readiness at /readyz, and, only
// when asked for, the Go profiler under /debug/pprof/. It also holds the
// readiness check the services share: NATS connected and every bucket the
// service uses responding.
package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Paths of the operational endpoints.
const (
	PathMetrics = "/metrics"
	PathHealth  = "/healthz"
	PathReady   = "/readyz"
	PathPprof   = "/debug/pprof/"
)

// readyTimeout bounds one readiness check, so a probe with a short timeout
// gets an answer rather than a hung connection.
const readyTimeout = 2 * time.Second

// Check reports why a service is not ready, or nil when it is.
type Check func(ctx context.Context) error

// NATSReady returns a check that passes while nc is connected and the stream
// of each named bucket answers a JetStream info request. A bucket whose
// stream has lost its quorum in a cluster does not answer, so the service
// reports not ready rather than failing every request.
func NATSReady(nc *nats.Conn, js jetstream.JetStream, buckets ...string) Check {
	return func(ctx context.Context) error {
		if status := nc.Status(); status != nats.CONNECTED {
			return fmt.Errorf("nats connection is %s", status)
		}
		for _, name := range buckets {
			if _, err := js.KeyValue(ctx, name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		return nil
	}
}

// All returns a check that passes when every check passes.
func All(checks ...Check) Check {
	return func(ctx context.Context) error {
		for _, check := range checks {
			if err := check(ctx); err != nil {
				return err
			}
		}
		return nil
	}
}

// Health serves /healthz and /readyz on mux. /healthz returns 200 while the
// process can serve HTTP at all. /readyz returns 200 only while ready
// passes, and 503 with the reason otherwise, so that a load balancer stops
// sending work to a service that cannot reach its storage.
func Health(mux *http.ServeMux, ready Check, log zerolog.Logger) {
	mux.HandleFunc("GET "+PathHealth, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET "+PathReady, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()

		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := ready(ctx); err != nil {
			log.Debug().Err(err).Msg("not ready")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
}

// Handler returns the handler of a service's debug listener: metrics from
// gatherer, the health endpoints, and the profiler when withPprof is true.
// The profiler exposes memory contents and can cost CPU, so it stays off
// unless an operator turns it on.
func Handler(gatherer prometheus.Gatherer, ready Check, withPprof bool, log zerolog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	Health(mux, ready, log)
	if withPprof {
		mux.HandleFunc(PathPprof, pprof.Index)
		mux.HandleFunc(PathPprof+"cmdline", pprof.Cmdline)
		mux.HandleFunc(PathPprof+"profile", pprof.Profile)
		mux.HandleFunc(PathPprof+"symbol", pprof.Symbol)
		mux.HandleFunc(PathPprof+"trace", pprof.Trace)
	}
	return mux
}

// Serve serves h on addr until ctx ends. An empty addr serves nothing and
// returns when ctx ends, so a debug listener can be turned off.
func Serve(ctx context.Context, addr string, h http.Handler, log zerolog.Logger) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ops: listen on %s: %w", addr, err)
	}
	return ServeListener(ctx, listener, h, log)
}

// ServeListener is Serve on a listener the caller opened.
func ServeListener(ctx context.Context, listener net.Listener, h http.Handler, log zerolog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// A CPU profile or a trace runs for as long as its seconds
		// parameter asks, 30 s by default.
		WriteTimeout: 65 * time.Second,
		IdleTimeout:  90 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(listener) }()
	log.Info().Str("addr", listener.Addr().String()).Msg("debug listener serving")

	select {
	case err := <-serveErr:
		return fmt.Errorf("ops: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("ops: shutdown: %w", err)
	}
	return nil
}

// promLogger passes errors from gathering metrics to zerolog.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error().Str("error", fmt.Sprint(v...)).Msg("gathering metrics failed")
}
