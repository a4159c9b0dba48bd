package loadgen

import (
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
)

// startSystem runs the whole system in this process on an embedded
// nats-server and serves the edge on loopback. maxHold is the edge's hold
// cap; a negative value switches holds off.
func startSystem(t *testing.T, maxHold time.Duration) (baseURL, natsURL, metricsURL string) {
	t.Helper()

	server := httptest.NewUnstartedServer(nil)
	baseURL = "http://" + server.Listener.Addr().String()
	stack, err := devstack.Start(t.Context(), devstack.Config{
		DataDir: t.TempDir(),
		Seed:    true,
		Edge: edge.Config{
			PublicURL:    baseURL,
			PollInterval: time.Second,
			MaxHold:      maxHold,
			PasswordCost: bcrypt.MinCost,
		},
	}, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatalf("start system: %v", err)
	}
	server.Config.Handler = stack.Edge.Handler()
	server.Start()
	metrics := httptest.NewServer(promhttp.HandlerFor(stack.Metrics(), promhttp.HandlerOpts{}))
	t.Cleanup(metrics.Close)
	t.Cleanup(func() {
		stack.Edge.Close()
		server.CloseClientConnections()
		server.Close()
		stack.Close()
	})
	return baseURL, stack.NATSURL(), metrics.URL + "/metrics"
}

func TestRunLongPolling(t *testing.T) {
	baseURL, natsURL, metricsURL := startSystem(t, 0)

	report, err := Run(t.Context(), Config{
		BaseURL:        baseURL,
		EdgeMetricsURL: metricsURL,
		Mode:           ModeLong,
		Devices:        20,
		CodeRate:       200,
		Wait:           20,
		ApprovalRate:   20,
		Phones:         2,
		Duration:       time.Second,
		MaxRun:         30 * time.Second,
		Sources:        2,
		EdgePID:        os.Getpid(),
		NATSURL:        natsURL,
	}, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var printed strings.Builder
	report.Print(&printed)
	t.Log(printed.String())

	if len(report.Errors) != 0 {
		t.Errorf("errors: %v, want none", report.Errors)
	}
	if got := report.Counts[CountApprovals]; got < 5 {
		t.Errorf("approvals in window = %d, want at least 5 at 20/s for 1s", got)
	}
	if report.Undelivered != 0 {
		t.Errorf("undelivered approvals = %d, want 0", report.Undelivered)
	}
	if got, want := latencyCount(report, StepApprovalToToken), report.Counts[CountApprovals]; got != want {
		t.Errorf("approval-to-token samples = %d, want one per approval (%d)", got, want)
	}
	if latencyCount(report, StepHeldPoll) == 0 {
		t.Error("no held poll was recorded")
	}
	if report.Edge == nil || report.Edge.Start.RSS == 0 || report.Edge.End.CPU < report.Edge.Start.CPU {
		t.Errorf("edge samples = %+v, want RSS and a CPU time that does not go back", report.Edge)
	}
	if !report.Settled {
		t.Error("window opened before the edge stored every first poll")
	}
	if report.Storage == nil || report.Storage.Writes["device_codes"] == 0 || report.Storage.Reads["device_codes"] == 0 {
		t.Errorf("storage operations = %+v, want device_codes reads and writes from the approvals", report.Storage)
	}

	m := report.Metrics
	if m == nil {
		t.Fatal("no comparison with the edge's metrics, although a metrics URL was given")
	}
	if m.TokensEdge != uint64(m.TokensLoad) {
		t.Errorf("edge histogram counted %d tokens, the load received %d", m.TokensEdge, m.TokensLoad)
	}
	if m.HeldPollsEdge == 0 || m.HeldPollsLoad == 0 {
		t.Errorf("held polls mid-window: edge %v, load %d, want both above zero", m.HeldPollsEdge, m.HeldPollsLoad)
	}
	if len(m.Fractions) == 0 {
		t.Error("no latency buckets compared")
	}
}

func TestRunPlainPollingWithHoldsOff(t *testing.T) {
	baseURL, _, _ := startSystem(t, -time.Second)

	report, err := Run(t.Context(), Config{
		BaseURL:      baseURL,
		Mode:         ModeLong,
		Devices:      10,
		ApprovalRate: 10,
		Phones:       1,
		Duration:     1500 * time.Millisecond,
		MaxRun:       30 * time.Second,
	}, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	if len(report.Errors) != 0 {
		t.Errorf("errors: %v, want none", report.Errors)
	}
	if n := latencyCount(report, StepHeldPoll); n != 0 {
		t.Errorf("held polls = %d, want 0 with holds switched off", n)
	}
	if n := report.Counts[CountSlowDown]; n != 0 {
		t.Errorf("slow_down answers = %d, want 0 from devices that keep the interval", n)
	}
	if report.Counts[CountTokens] == 0 {
		t.Error("no device received a token")
	}
}

func TestRunAuthorizeOnly(t *testing.T) {
	baseURL, _, _ := startSystem(t, 0)

	report, err := Run(t.Context(), Config{
		BaseURL:  baseURL,
		Mode:     ModeAuthorize,
		Devices:  4,
		Duration: 500 * time.Millisecond,
		MaxRun:   10 * time.Second,
	}, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	if len(report.Errors) != 0 {
		t.Errorf("errors: %v, want none", report.Errors)
	}
	if report.Counts[CountAuthorizations] == 0 || latencyCount(report, StepDeviceAuthorization) == 0 {
		t.Errorf("counts = %v, want device authorizations", report.Counts)
	}
	if report.Counts[CountPolls] != 0 {
		t.Errorf("token polls = %d, want 0 in authorize mode", report.Counts[CountPolls])
	}
}

func TestRunWrongPassword(t *testing.T) {
	baseURL, _, _ := startSystem(t, 0)

	_, err := Run(t.Context(), Config{
		BaseURL: baseURL, Devices: 1, ApprovalRate: 1, Password: "wrong",
		Duration: time.Second, MaxRun: 10 * time.Second,
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "sign in") {
		t.Errorf("run with a wrong password: error %v, want a sign-in error", err)
	}
}

func TestValidateTargets(t *testing.T) {
	tests := []struct {
		name    string
		baseURL string
		natsURL string
		sources int
		wantErr string
	}{
		{"IPv4 loopback is accepted", "http://127.0.0.1:8080", "", 0, ""},
		{"any 127/8 address is accepted", "http://127.8.9.10:8080", "nats://127.0.0.1:4222", 4, ""},
		{"IPv6 loopback is accepted", "http://[::1]:8080", "", 0, ""},
		{"a public address is rejected", "http://192.0.2.1:8080", "", 0, "not a loopback"},
		{"a host name is rejected", "http://localhost:8080", "", 0, "must be a loopback IP"},
		{"an IPv4-mapped public address is rejected", "http://[::ffff:192.0.2.1]:8080", "", 0, "not a loopback"},
		{"a non-loopback NATS URL is rejected", "http://127.0.0.1:8080", "nats://10.0.0.1:4222", 0, "NATS URL"},
		{"source addresses need an IPv4 target", "http://[::1]:8080", "", 2, "IPv4"},
		{"another scheme is rejected", "ftp://127.0.0.1/", "", 0, "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{BaseURL: tt.baseURL, NATSURL: tt.natsURL, Sources: tt.sources, Devices: 1}
			cfg.setDefaults()
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStatCPU(t *testing.T) {
	// Fields 14 and 15 are 250 and 50 ticks; the command name has spaces
	// and a parenthesis.
	stat := []byte("4242 (edge (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0")
	got, err := statCPU(stat)
	if err != nil {
		t.Fatalf("statCPU: %v", err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("statCPU = %s, want %s", got, want)
	}
}

func TestBucketFromSubject(t *testing.T) {
	if got := readBucket("$JS.API.DIRECT.GET.KV_device_codes.$KV.device_codes.abc", "$JS.API.DIRECT.GET."); got != "device_codes" {
		t.Errorf("readBucket of a direct get = %q, want device_codes", got)
	}
	if got := readBucket("$JS.API.STREAM.MSG.GET.DEVICE", "$JS.API.STREAM.MSG.GET."); got != "" {
		t.Errorf("readBucket of a stream that is no bucket = %q, want empty", got)
	}
	if got := writeBucket("$KV.user_codes.xyz"); got != "user_codes" {
		t.Errorf("writeBucket = %q, want user_codes", got)
	}
}

func latencyCount(rep *Report, step string) int {
	for _, l := range rep.Latencies {
		if l.Step == step {
			return l.Count
		}
	}
	return 0
}
