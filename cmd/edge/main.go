// Command edge serves the public HTTP endpoints. With --dev it also runs an
// embedded nats-server, the approver and the issuer in the same process, and
// seeds a demo client and account: the whole system in one command.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/internal/cli"
	"github.com/streamco/deviceauth/internal/devstack"
	"github.com/streamco/deviceauth/internal/edge"
	"github.com/streamco/deviceauth/internal/issuer"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/natsinfra"
)

func main() {
	flags := cli.NewFlags("edge")
	natsFlags := flags.NATS()
	debug := flags.Debug("127.0.0.1:9090")
	addr := flags.String("addr", "EDGE_ADDR", "127.0.0.1:8080", "HTTP listen address")
	publicURL := flags.String("public-url", "PUBLIC_URL", "", "base URL devices and phones use to reach the edges (default http://ADDR)")
	hashKeyFile := flags.String("hash-key-file", "HASH_KEY_FILE", "", "file with the hex hash key shared by every edge and the issuer")
	replicas := flags.Int("replicas", "NATS_REPLICAS", 1, "replicas of each stream and bucket (3 in a three-node cluster)")
	maxHold := flags.Duration("max-hold", "MAX_HOLD", 0, "longest hold granted to a poll with Prefer: wait, at most 55s (default 20s; a negative value turns holding off)")
	codeLifetime := flags.Duration("code-lifetime", "CODE_LIFETIME", 0, "lifetime of a device code for clients that set none (default 10m)")
	pollInterval := flags.Duration("poll-interval", "POLL_INTERVAL", 0, "poll interval for clients that set none (default 5s)")
	replayWindow := flags.Duration("replay-window", "REPLAY_WINDOW", 0, "how long after redemption the same client gets the identical token response again (default 15s; negative turns replays off)")
	logLevel := flags.String("log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error")
	logPretty := flags.Bool("log-pretty", "LOG_PRETTY", false, "human-readable logs instead of JSON")
	dev := flags.Bool("dev", "DEV", false, "run everything in this process on an embedded NATS server, with demo data")
	dataDir := flags.String("data", "DATA_DIR", "data", "with --dev: directory for the NATS store, the hash key and the signing keys")
	algorithm := flags.String("algorithm", "SIGNING_ALGORITHM", issuer.AlgorithmRS256, "with --dev: the issuer's signing algorithm, RS256 or ES256")
	flags.Parse(os.Args[1:])

	// Development mode writes human-readable logs unless --log-pretty or LOG_PRETTY is set.
	pretty := *logPretty || (*dev && !flags.IsSet("log-pretty"))
	log, err := cli.Logger(*logLevel, pretty)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *publicURL == "" {
		*publicURL = "http://" + *addr
	}
	cfg := edge.Config{
		Addr:         *addr,
		PublicURL:    *publicURL,
		Storage:      natsinfra.Settings{Replicas: *replicas},
		MaxHold:      *maxHold,
		CodeLifetime: *codeLifetime,
		PollInterval: *pollInterval,
		ReplayWindow: *replayWindow,
	}

	ctx, stop := cli.SignalContext()
	defer stop()

	if *dev {
		runDev(ctx, log, cfg, issuer.Config{Algorithm: *algorithm}, *dataDir, debug)
		return
	}

	if *hashKeyFile == "" {
		cli.Fatal(log, fmt.Errorf("--hash-key-file is required without --dev"), "invalid configuration")
	}
	cfg.HashKey, err = keyfile.Read(*hashKeyFile)
	if err != nil {
		cli.Fatal(log, err, "invalid configuration")
	}
	nc, err := natsinfra.Connect(*natsFlags.URL, "edge", log, natsFlags.Options()...)
	if err != nil {
		cli.Fatal(log, err, "connecting to NATS failed")
	}
	defer nc.Close()

	e, err := edge.New(nc, cfg, log)
	if err != nil {
		cli.Fatal(log, err, "invalid configuration")
	}
	cli.ServeDebug(ctx, debug, e.Metrics(), e.Ready, log)
	if err := e.Run(ctx); err != nil {
		cli.Fatal(log, err, "edge failed")
	}
	// Run returned after every request finished; draining delivers what the
	// connection still buffers and flushes its last publishes.
	if err := nc.Drain(); err != nil {
		log.Warn().Err(err).Msg("draining the NATS connection failed")
	}
}

func runDev(ctx context.Context, log zerolog.Logger, cfg edge.Config, issuerCfg issuer.Config, dataDir string, debug cli.DebugFlags) {
	absData, err := filepath.Abs(dataDir)
	if err != nil {
		cli.Fatal(log, err, "invalid data directory")
	}
	stack, err := devstack.Start(ctx, devstack.Config{DataDir: absData, Edge: cfg, Issuer: issuerCfg, Seed: true}, log)
	if err != nil {
		cli.Fatal(log, err, "starting the development stack failed")
	}
	defer stack.Close()
	cli.ServeDebug(ctx, debug, stack.Metrics(), stack.Ready, log)

	metrics := "off (--debug-addr is empty)"
	if *debug.Addr != "" {
		metrics = "http://" + *debug.Addr + "/metrics"
	}
	fmt.Fprintf(os.Stderr, `
Device authorization server running (development mode).
  Edge:          %[1]s
  Metadata:      %[1]s/.well-known/oauth-authorization-server
  Phone page:    %[1]s/device   (sign in as %[2]s / %[3]s)
  NATS:          %[4]s   (data in %[5]s)
  Metrics:       %[7]s
Try it:
  curl -s -d client_id=%[6]s -d scope=profile %[1]s/oauth/device_authorization

`, cfg.PublicURL, devstack.DemoUsername, devstack.DemoPassword, stack.NATSURL(), absData, devstack.DemoClientID, metrics)

	runErr := make(chan error, 1)
	go func() { runErr <- stack.Edge.Serve(ctx, cfg.Addr) }()
	select {
	case err := <-runErr:
		if err != nil {
			cli.Fatal(log, err, "edge failed")
		}
	case err := <-stack.Errors():
		cli.Fatal(log, err, "a worker stopped")
	}
}
