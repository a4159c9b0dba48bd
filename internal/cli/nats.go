package cli

import (
	"context"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/internal/ops"
)

// NATSFlags are the connection flags every command shares.
type NATSFlags struct {
	URL       *string
	User      *string
	CredsFile *string
	password  *string
}

// NATS defines --nats, --nats-user, --nats-password and --nats-creds.
func (f *Flags) NATS() NATSFlags {
	return NATSFlags{
		URL:       f.String("nats", "NATS_URL", "nats://127.0.0.1:4222", "NATS server URLs, comma-separated; user:password@ in a URL also sets the credentials"),
		User:      f.String("nats-user", "NATS_USER", "", "NATS user name"),
		password:  f.Secret("nats-password", "NATS_PASSWORD", "NATS password"),
		CredsFile: f.String("nats-creds", "NATS_CREDS", "", "NATS credentials file (JWT and NKey seed), instead of a user and password"),
	}
}

// Options returns the connection options the flags ask for.
func (n NATSFlags) Options() []nats.Option {
	var opts []nats.Option
	if *n.User != "" {
		opts = append(opts, nats.UserInfo(*n.User, *n.password))
	}
	if *n.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(*n.CredsFile))
	}
	return opts
}

// Secret defines a string flag for a secret. Unlike String it does not show
// the environment variable's value as the default in --help; the variable is
// read when the flag is not given.
func (f *Flags) Secret(name, env, usage string) *string {
	value := f.FlagSet.String(name, "", usage+" (env "+env+")")
	f.secrets = append(f.secrets, secretFlag{value: value, env: env})
	return value
}

type secretFlag struct {
	value *string
	env   string
}

// DebugFlags configure the debug listener every command serves.
type DebugFlags struct {
	Addr  *string
	Pprof *bool
}

// Debug defines --debug-addr and --pprof with addr as the default address.
func (f *Flags) Debug(addr string) DebugFlags {
	return DebugFlags{
		Addr:  f.String("debug-addr", "DEBUG_ADDR", addr, "listen address for /metrics, /healthz and /readyz; empty turns the listener off"),
		Pprof: f.Bool("pprof", "PPROF", false, "serve the Go profiler under /debug/pprof/ on the debug listener"),
	}
}

// Registry returns a registry with the Go runtime and process collectors,
// for a command to gather alongside its service's own registry.
func Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func (f *Flags) readSecrets() {
	for _, s := range f.secrets {
		if *s.value == "" {
			*s.value = os.Getenv(s.env)
		}
	}
}

// ServeDebug serves the debug listener in the background until ctx ends,
// with the runtime collectors added to gatherer. A listener that fails to
// start stops the command, since an operator asked for it.
func ServeDebug(ctx context.Context, flags DebugFlags, gatherer prometheus.Gatherer, ready ops.Check, log zerolog.Logger) {
	handler := ops.Handler(prometheus.Gatherers{Registry(), gatherer}, ready, *flags.Pprof, log)
	go func() {
		if err := ops.Serve(ctx, *flags.Addr, handler, log); err != nil {
			Fatal(log, err, "debug listener failed")
		}
	}()
}
