// Package loadgen drives a running device authorization server over HTTP the
// way a fleet does: devices request codes and wait for tokens with long polls
// or plain polls, and simulated phones post approvals through the consent
// form. It measures each step and the edge process's memory and CPU, and it
// only ever sends traffic to a loopback address.
package loadgen

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"time"
)

// Mode is the behaviour of simulated devices after they get their codes.
type Mode string

const (
	// ModeLong holds every token request open with "Prefer: wait".
	ModeLong Mode = "long"
	// ModePlain polls at the advertised interval without asking for a hold.
	ModePlain Mode = "plain"
	// ModeAuthorize only requests device codes, back to back, and never
	// polls. It measures device authorization throughput.
	ModeAuthorize Mode = "authorize"
)

// Config configures one load run.
type Config struct {
	// BaseURL is the edge, such as http://127.0.0.1:8080. Its host must be
	// a loopback IP literal.
	BaseURL string
	// ClientID, Scope, Username and Password are the public client the
	// devices use and the account the phones sign in with.
	ClientID string
	Scope    string
	Username string
	Password string

	Mode Mode
	// Devices is the number of simulated devices. Each requests a code,
	// waits for its token, and requests a new code once it has one, so the
	// fleet keeps this many devices waiting.
	Devices int
	// CodeRate caps device authorization requests per second over the
	// whole fleet. Zero means no cap.
	CodeRate float64
	// Wait is the hold, in seconds, that ModeLong requests.
	Wait int

	// ApprovalRate is approvals posted per second once every device is
	// waiting. Zero posts none.
	ApprovalRate float64
	// Phones is the number of simulated phones. Each signs in once and
	// posts its share of the approvals with its session and CSRF cookies.
	Phones int

	// Duration is the measured window, which starts once every device has
	// made its first poll (at once in ModeAuthorize).
	Duration time.Duration
	// MaxRun ends the whole run, ramp and window included, even when the
	// fleet never becomes ready.
	MaxRun time.Duration

	// Sources is the number of extra loopback source addresses (127.0.0.2
	// upwards) that outgoing connections are spread over, so that tens of
	// thousands of held connections do not run out of client ports. Zero
	// lets the kernel pick the source address.
	Sources int

	// EdgePID is the edge process whose memory and CPU time are sampled
	// from /proc. Zero skips the sampling.
	EdgePID int
	// NATSURL, when set, is the NATS server of the system under load. The
	// run subscribes to the JetStream API subjects of the KV buckets there
	// and counts storage reads and writes. Its host must be loopback too.
	NATSURL string
	// EdgeMetricsURL, when set, is the edge's /metrics address on its
	// debug listener. The run then compares the edge's held-poll gauge and
	// approval-to-token histogram with its own measurements. Its host must
	// be loopback too.
	EdgeMetricsURL string
}

// Defaults for the fields of Config left zero.
const (
	DefaultClientID = "tv-app"
	DefaultUsername = "demo"
	DefaultPassword = "demo"
	DefaultWait     = 20
	DefaultPhones   = 8
	DefaultDuration = 30 * time.Second
	DefaultMaxRun   = 10 * time.Minute
)

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Username == "" {
		c.Username = DefaultUsername
	}
	if c.Password == "" {
		c.Password = DefaultPassword
	}
	if c.Mode == "" {
		c.Mode = ModeLong
	}
	if c.Wait == 0 {
		c.Wait = DefaultWait
	}
	if c.Phones == 0 {
		c.Phones = DefaultPhones
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.MaxRun == 0 {
		c.MaxRun = DefaultMaxRun
	}
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error

	target, err := loopbackHost(c.BaseURL, "http", "https")
	if err != nil {
		errs = append(errs, fmt.Errorf("base URL: %w", err))
	}
	if c.NATSURL != "" {
		if _, err := loopbackHost(c.NATSURL, "nats"); err != nil {
			errs = append(errs, fmt.Errorf("NATS URL: %w", err))
		}
	}
	if c.EdgeMetricsURL != "" {
		if _, err := loopbackHost(c.EdgeMetricsURL, "http"); err != nil {
			errs = append(errs, fmt.Errorf("edge metrics URL: %w", err))
		}
	}

	switch c.Mode {
	case ModeLong, ModePlain, ModeAuthorize:
	default:
		errs = append(errs, fmt.Errorf("mode %q must be long, plain or authorize", c.Mode))
	}
	if c.Devices < 1 {
		errs = append(errs, fmt.Errorf("devices %d must be at least 1", c.Devices))
	}
	if c.CodeRate < 0 || c.ApprovalRate < 0 {
		errs = append(errs, errors.New("rates must not be negative"))
	}
	if c.Wait < 1 {
		errs = append(errs, fmt.Errorf("wait %d must be at least 1 second", c.Wait))
	}
	if c.Phones < 1 {
		errs = append(errs, fmt.Errorf("phones %d must be at least 1", c.Phones))
	}
	if c.Duration <= 0 || c.MaxRun <= 0 {
		errs = append(errs, errors.New("duration and max run must be positive"))
	}
	if c.Duration > c.MaxRun {
		errs = append(errs, fmt.Errorf("duration %s is longer than max run %s", c.Duration, c.MaxRun))
	}

	if c.Sources < 0 || c.Sources > 250 {
		errs = append(errs, fmt.Errorf("sources %d must be between 0 and 250", c.Sources))
	}
	if c.Sources > 0 && err == nil && !target.Is4() {
		errs = append(errs, errors.New("extra source addresses are IPv4, so the base URL must be an IPv4 loopback address"))
	}
	if c.EdgePID < 0 {
		errs = append(errs, fmt.Errorf("edge PID %d must not be negative", c.EdgePID))
	}
	return errors.Join(errs...)
}

// loopbackHost parses rawURL and returns its host, which must be an IP
// literal in 127.0.0.0/8 or ::1. Names are rejected even when they resolve
// to loopback, because what a name resolves to can change.
func loopbackHost(rawURL string, schemes ...string) (netip.Addr, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid URL %q: %w", rawURL, err)
	}
	schemeOK := false
	for _, s := range schemes {
		schemeOK = schemeOK || u.Scheme == s
	}
	if !schemeOK {
		return netip.Addr{}, fmt.Errorf("URL %q must use scheme %v", rawURL, schemes)
	}
	addr, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("host %q of %q must be a loopback IP address such as 127.0.0.1 or ::1", u.Hostname(), rawURL)
	}
	if !addr.Unmap().IsLoopback() {
		return netip.Addr{}, fmt.Errorf("host %s of %q is not a loopback address; only 127.0.0.0/8 and ::1 are allowed", addr, rawURL)
	}
	return addr.Unmap(), nil
}

// sourceAddrs returns the loopback addresses outgoing connections bind to:
// 127.0.0.2 upwards, n of them, or none to let the kernel choose.
func sourceAddrs(n int) []netip.Addr {
	addrs := make([]netip.Addr, 0, n)
	for i := range n {
		addrs = append(addrs, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}))
	}
	return addrs
}
