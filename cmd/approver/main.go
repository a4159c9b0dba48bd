// Command approver consumes the decisions people make on the phone and moves
// each device code to approved or denied.
package main

import (
	"fmt"
	"os"

	"github.com/streamco/deviceauth/internal/approver"
	"github.com/streamco/deviceauth/internal/cli"
	"github.com/streamco/deviceauth/internal/natsinfra"
)

func main() {
	flags := cli.NewFlags("approver")
	natsFlags := flags.NATS()
	debug := flags.Debug("127.0.0.1:9091")
	replicas := flags.Int("replicas", "NATS_REPLICAS", 1, "replicas of each stream and bucket (3 in a three-node cluster)")
	logLevel := flags.String("log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error")
	logPretty := flags.Bool("log-pretty", "LOG_PRETTY", false, "human-readable logs instead of JSON")
	flags.Parse(os.Args[1:])

	log, err := cli.Logger(*logLevel, *logPretty)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := cli.SignalContext()
	defer stop()

	nc, err := natsinfra.Connect(*natsFlags.URL, "approver", log, natsFlags.Options()...)
	if err != nil {
		cli.Fatal(log, err, "connecting to NATS failed")
	}
	defer nc.Close()

	a, err := approver.New(nc, approver.Config{Storage: natsinfra.Settings{Replicas: *replicas}}, log)
	if err != nil {
		cli.Fatal(log, err, "invalid configuration")
	}
	cli.ServeDebug(ctx, debug, a.Metrics(), a.Ready, log)
	if err := a.Run(ctx); err != nil {
		cli.Fatal(log, err, "approver failed")
	}
	if err := nc.Drain(); err != nil {
		log.Warn().Err(err).Msg("draining the NATS connection failed")
	}
}
