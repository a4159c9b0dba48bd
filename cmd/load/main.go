// Command load drives a running device authorization server over HTTP with
// a simulated fleet of devices and phones, and prints latency percentiles,
// throughput, errors, and the edge's memory and CPU. It only targets
// loopback addresses. docs/BENCHMARKS.md shows how to run it.
//
//	load --url http://127.0.0.1:8080 --devices 1000 --mode long --approval-rate 50 --edge-pid PID
//	load compare long.json plain.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/streamco/deviceauth/internal/cli"
	"github.com/streamco/deviceauth/internal/loadgen"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "compare" {
		os.Exit(compare(os.Args[2:]))
	}

	flags := cli.NewFlags("load")
	baseURL := flags.String("url", "LOAD_URL", "http://127.0.0.1:8080", "base URL of the edge; must be a loopback IP address")
	mode := flags.String("mode", "LOAD_MODE", "long", "long (hold polls with Prefer: wait), plain (poll at the interval) or authorize (request codes only)")
	devices := flags.Int("devices", "LOAD_DEVICES", 100, "simulated devices, each waiting for a token at all times")
	codeRate := flags.Int("code-rate", "LOAD_CODE_RATE", 1000, "device authorization requests per second over the fleet; 0 means uncapped")
	wait := flags.Int("wait", "LOAD_WAIT", loadgen.DefaultWait, "hold in seconds that long mode asks for with Prefer: wait")
	approvalRate := flags.Int("approval-rate", "LOAD_APPROVAL_RATE", 0, "approvals posted per second during the window; 0 posts none")
	phones := flags.Int("phones", "LOAD_PHONES", loadgen.DefaultPhones, "simulated phones; each signs in once and posts its share of approvals")
	duration := flags.Duration("duration", "LOAD_DURATION", loadgen.DefaultDuration, "length of the measured window, which starts once every device is waiting")
	maxRun := flags.Duration("max-run", "LOAD_MAX_RUN", loadgen.DefaultMaxRun, "hard limit on the whole run, ramp and drain included")
	sources := flags.Int("sources", "LOAD_SOURCES", 0, "extra loopback source addresses (127.0.0.2 upwards) to spread connections over; 0 lets the kernel choose")
	edgePID := flags.Int("edge-pid", "LOAD_EDGE_PID", 0, "PID of the edge process whose memory and CPU time to sample; 0 skips sampling")
	natsURL := flags.String("nats", "LOAD_NATS_URL", "", "NATS URL of the system under load, to count KV reads and writes; empty skips counting")
	edgeMetrics := flags.String("edge-metrics", "LOAD_EDGE_METRICS", "", "the edge's /metrics URL on its debug listener, such as http://127.0.0.1:9090/metrics, to compare its held-poll gauge and latency histogram with the load's; empty skips the comparison")
	clientID := flags.String("client-id", "LOAD_CLIENT_ID", loadgen.DefaultClientID, "public client the devices use")
	scope := flags.String("scope", "LOAD_SCOPE", "", "scope the devices request; empty requests the client's default")
	username := flags.String("username", "LOAD_USERNAME", loadgen.DefaultUsername, "account the phones sign in with")
	password := flags.String("password", "LOAD_PASSWORD", loadgen.DefaultPassword, "password of that account")
	jsonFile := flags.String("json", "LOAD_JSON", "", "also write the report as JSON to this file, for load compare")
	flags.Parse(os.Args[1:])

	cfg := loadgen.Config{
		BaseURL:        *baseURL,
		ClientID:       *clientID,
		Scope:          *scope,
		Username:       *username,
		Password:       *password,
		Mode:           loadgen.Mode(*mode),
		Devices:        *devices,
		CodeRate:       float64(*codeRate),
		Wait:           *wait,
		ApprovalRate:   float64(*approvalRate),
		Phones:         *phones,
		Duration:       *duration,
		MaxRun:         *maxRun,
		Sources:        *sources,
		EdgePID:        *edgePID,
		NATSURL:        *natsURL,
		EdgeMetricsURL: *edgeMetrics,
	}

	ctx, stop := cli.SignalContext()
	defer stop()
	report, err := loadgen.Run(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	report.Print(os.Stdout)

	if *jsonFile != "" {
		data, err := json.MarshalIndent(report, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonFile, data, 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "write report to %s: %v\n", *jsonFile, err)
			os.Exit(1)
		}
	}
}

// compare prints the figures of reports written with --json side by side.
func compare(files []string) int {
	if len(files) < 2 {
		fmt.Fprintln(os.Stderr, "usage: load compare FIRST.json SECOND.json ... (ratios are to the first)")
		return 2
	}
	var names []string
	var reports []*loadgen.Report
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var rep loadgen.Report
		if err := json.Unmarshal(data, &rep); err != nil {
			fmt.Fprintf(os.Stderr, "%s is not a load report: %v\n", file, err)
			return 1
		}
		names = append(names, strings.TrimSuffix(file[strings.LastIndex(file, "/")+1:], ".json"))
		reports = append(reports, &rep)
	}
	loadgen.PrintComparison(os.Stdout, names, reports)
	return 0
}
