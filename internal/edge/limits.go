package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
)

// Limit allows Max failures per fixed window of Window. Max zero means the
// default, and a negative Max switches the limit off.
type Limit struct {
	Max    int
	Window time.Duration
}

// Limits are the abuse limits of the phone side. They count failures only
// (a wrong code, a failed sign-in), so a household whose many devices share
// one address is never held back by its successes, and the per-address
// limits are generous for the same reason.
type Limits struct {
	// WrongCodesPerAddress counts unknown user codes from one IPv4 address
	// or IPv6 /64. Default: 30 per 15 minutes.
	WrongCodesPerAddress Limit
	// WrongCodesPerBrowser counts unknown user codes from one browser,
	// known by its CSRF cookie. Default: 10 per 15 minutes.
	WrongCodesPerBrowser Limit
	// WrongCodesGlobal counts unknown user codes across every edge, the
	// backstop against guessing spread over many addresses. Default: 600
	// per minute.
	//
	// NOTE: whoever reaches this limit stops code entry for everyone until
	// the window ends. The default is a guess, not a measurement: size it
	// above the wrong-code rate of the busiest legitimate minute.
	WrongCodesGlobal Limit
	// FailedSignInsPerAddress and FailedSignInsPerAccount count wrong
	// passwords. Defaults: 30 per 15 minutes per address, 10 per 15
	// minutes per username.
	FailedSignInsPerAddress Limit
	FailedSignInsPerAccount Limit
}

func (l *Limits) setDefaults() {
	def := func(limit *Limit, max int, window time.Duration) {
		if limit.Max == 0 {
			limit.Max = max
		}
		if limit.Window == 0 {
			limit.Window = window
		}
	}
	def(&l.WrongCodesPerAddress, 30, 15*time.Minute)
	def(&l.WrongCodesPerBrowser, 10, 15*time.Minute)
	def(&l.WrongCodesGlobal, 600, time.Minute)
	def(&l.FailedSignInsPerAddress, 30, 15*time.Minute)
	def(&l.FailedSignInsPerAccount, 10, 15*time.Minute)
}

func (l *Limits) validate() []error {
	var errs []error
	for name, limit := range map[string]Limit{
		"wrong codes per address":     l.WrongCodesPerAddress,
		"wrong codes per browser":     l.WrongCodesPerBrowser,
		"wrong codes globally":        l.WrongCodesGlobal,
		"failed sign-ins per address": l.FailedSignInsPerAddress,
		"failed sign-ins per account": l.FailedSignInsPerAccount,
	} {
		if limit.Window < time.Second || limit.Window > natsinfra.RateLimitTTL {
			errs = append(errs, fmt.Errorf("rate limit window for %s is %s, want 1s to %s", name, limit.Window, natsinfra.RateLimitTTL))
		}
	}
	return errs
}

// counter is one limit applied to one subject, such as an address.
type counter struct {
	name    string
	limit   Limit
	subject string
}

// limiter counts failures in the rate limits bucket, shared by all edges.
// Windows are fixed (aligned to multiples of their length), so a burst at a
// window's end and the next window's start can reach twice Max.
type limiter struct {
	bucket *kv.Bucket[int]
	id     func(subject string) string
	now    func() time.Time
}

func (l *limiter) key(c counter, now time.Time) (string, time.Time) {
	start := now.Truncate(c.limit.Window)
	return c.name + "." + l.id(c.subject) + "." + strconv.FormatInt(start.Unix(), 10), start.Add(c.limit.Window)
}

// exceeded returns how long until every counter is under its limit again,
// zero when none is at its limit.
func (l *limiter) exceeded(ctx context.Context, counters ...counter) (time.Duration, string, error) {
	now := l.now()
	var wait time.Duration
	var which string
	for _, c := range counters {
		if c.limit.Max < 0 || c.subject == "" {
			continue
		}
		key, end := l.key(c, now)
		count, _, err := l.bucket.Get(ctx, key)
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, "", err
		}
		if count >= c.limit.Max && end.Sub(now) > wait {
			wait, which = end.Sub(now), c.name
		}
	}
	return wait, which, nil
}

// fail counts one failure against every counter, each by compare-and-set so
// that edges counting at once lose no failure.
func (l *limiter) fail(ctx context.Context, counters ...counter) error {
	now := l.now()
	for _, c := range counters {
		if c.limit.Max < 0 || c.subject == "" {
			continue
		}
		key, _ := l.key(c, now)
		if err := l.increment(ctx, key); err != nil {
			return err
		}
	}
	return nil
}

func (l *limiter) increment(ctx context.Context, key string) error {
	for range 20 {
		count, rev, err := l.bucket.Get(ctx, key)
		switch {
		case errors.Is(err, kv.ErrNotFound):
			_, err = l.bucket.Create(ctx, key, 1)
		case err != nil:
			return err
		default:
			_, err = l.bucket.Update(ctx, key, count+1, rev)
		}
		if errors.Is(err, kv.ErrExists) || errors.Is(err, kv.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("edge: rate limit counter %s: 20 compare-and-set conflicts in a row", key)
}

// Names of the counters, the first part of their keys.
const (
	limitCodeAddress   = "code_address"
	limitCodeBrowser   = "code_browser"
	limitCodeGlobal    = "code_global"
	limitSignInAddress = "signin_address"
	limitSignInAccount = "signin_account"
)

// codeCounters are the counters of wrong user codes for a request.
func (e *Edge) codeCounters(r *http.Request) []counter {
	return []counter{
		{limitCodeAddress, e.cfg.Limits.WrongCodesPerAddress, clientAddress(r)},
		{limitCodeBrowser, e.cfg.Limits.WrongCodesPerBrowser, browserID(r)},
		{limitCodeGlobal, e.cfg.Limits.WrongCodesGlobal, "all"},
	}
}

// signInCounters are the counters of failed sign-ins for a request.
func (e *Edge) signInCounters(r *http.Request, username string) []counter {
	return []counter{
		{limitSignInAddress, e.cfg.Limits.FailedSignInsPerAddress, clientAddress(r)},
		{limitSignInAccount, e.cfg.Limits.FailedSignInsPerAccount, username},
	}
}

// checkLimits returns how long the request must wait because a counter is
// at its limit, zero when it may go on, and logs a limited request.
func (e *Edge) checkLimits(r *http.Request, counters []counter) (time.Duration, error) {
	wait, which, err := e.limiter.exceeded(r.Context(), counters...)
	if err != nil {
		return 0, err
	}
	if wait > 0 {
		zerolog.Ctx(r.Context()).Warn().Str("limit", which).Str("network", addressNetwork(r.RemoteAddr)).
			Dur("retry_after", wait).Msg("request rate limited")
	}
	return wait, nil
}

// clientAddress returns the subject of per-address limits: the IPv4 address,
// or the /64 of an IPv6 address, because one household is given at least a
// /64 and can use any address in it.
//
// NOTE: this is the TCP peer. Behind a load balancer every request comes
// from the balancer, so per-address limits would count everyone together
// until the edge trusts a forwarding header.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	prefix, err := addr.Prefix(64)
	if err != nil {
		return addr.String()
	}
	return prefix.String()
}

// browserID returns the subject of per-browser limits: the CSRF cookie, set
// on the first page a browser loads, or the session cookie for a client
// such as the phone app that only has a session. A client that sends
// neither is counted by its address and globally only.
func browserID(r *http.Request) string {
	for _, name := range []string{csrfCookie, sessionCookie} {
		if c, err := r.Cookie(name); err == nil && c.Value != "" && len(c.Value) <= 128 {
			return name + ":" + c.Value
		}
	}
	return ""
}

// retryAfterSeconds returns a wait as whole seconds for Retry-After, rounded
// up so a client never comes back too early.
func retryAfterSeconds(wait time.Duration) string {
	return strconv.Itoa(int((wait + time.Second - 1) / time.Second))
}
