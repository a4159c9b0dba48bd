// Package cli holds what the three commands share: flags that fall back to
// environment variables, the root logger, and a context that ends on SIGINT
// or SIGTERM.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Flags wraps a FlagSet so that each flag's default comes from an
// environment variable when it is set.
type Flags struct {
	*flag.FlagSet
	errs    []error
	fromEnv map[string]bool
	secrets []secretFlag
}

// NewFlags returns flags for the named command.
func NewFlags(name string) *Flags {
	return &Flags{FlagSet: flag.NewFlagSet(name, flag.ExitOnError), fromEnv: map[string]bool{}}
}

// IsSet reports whether the flag was given on the command line or through
// its environment variable.
func (f *Flags) IsSet(name string) bool {
	set := f.fromEnv[name]
	f.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			set = true
		}
	})
	return set
}

// String defines a string flag whose default is env's value when set.
func (f *Flags) String(name, env, value, usage string) *string {
	if v, ok := os.LookupEnv(env); ok {
		value = v
	}
	return f.FlagSet.String(name, value, usage+" (env "+env+")")
}

// Bool defines a boolean flag whose default is env's value when set.
func (f *Flags) Bool(name, env string, value bool, usage string) *bool {
	if v, ok := os.LookupEnv(env); ok {
		f.fromEnv[name] = true
		parsed, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q is not a boolean", env, v))
		}
		value = parsed
	}
	return f.FlagSet.Bool(name, value, usage+" (env "+env+")")
}

// Int defines an integer flag whose default is env's value when set.
func (f *Flags) Int(name, env string, value int, usage string) *int {
	if v, ok := os.LookupEnv(env); ok {
		parsed, err := strconv.Atoi(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q is not an integer", env, v))
		}
		value = parsed
	}
	return f.FlagSet.Int(name, value, usage+" (env "+env+")")
}

// Duration defines a duration flag whose default is env's value when set.
func (f *Flags) Duration(name, env string, value time.Duration, usage string) *time.Duration {
	if v, ok := os.LookupEnv(env); ok {
		parsed, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q is not a duration such as 20s", env, v))
		}
		value = parsed
	}
	return f.FlagSet.Duration(name, value, usage+" (env "+env+")")
}

// Parse parses args and exits with status 2 if a flag or an environment
// variable is invalid.
func (f *Flags) Parse(args []string) {
	_ = f.FlagSet.Parse(args)
	f.readSecrets()
	if len(f.errs) > 0 {
		for _, err := range f.errs {
			fmt.Fprintln(os.Stderr, "invalid environment:", err)
		}
		os.Exit(2)
	}
}

// Logger returns the root logger: JSON lines on stderr, or human-readable
// lines when pretty is true.
func Logger(level string, pretty bool) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("log level %q is not one of debug, info, warn, error", level)
	}
	var out io.Writer = os.Stderr
	if pretty {
		out = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}
	}
	zerolog.DurationFieldUnit = time.Millisecond
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// SignalContext returns a context that ends on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Fatal logs err and exits with status 1.
func Fatal(log zerolog.Logger, err error, msg string) {
	log.Error().Err(err).Msg(msg)
	os.Exit(1)
}
