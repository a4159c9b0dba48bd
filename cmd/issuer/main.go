// Command issuer mints access and refresh tokens for approved device codes.
// It alone holds the signing keys.
package main

import (
	"fmt"
	"os"

	"github.com/streamco/deviceauth/internal/cli"
	"github.com/streamco/deviceauth/internal/issuer"
	"github.com/streamco/deviceauth/internal/keyfile"
	"github.com/streamco/deviceauth/internal/natsinfra"
)

func main() {
	flags := cli.NewFlags("issuer")
	natsFlags := flags.NATS()
	debug := flags.Debug("127.0.0.1:9092")
	replicas := flags.Int("replicas", "NATS_REPLICAS", 1, "replicas of each stream and bucket (3 in a three-node cluster)")
	issuerURL := flags.String("issuer", "ISSUER_URL", "", "the iss claim: the edges' public base URL, as given to them with --public-url")
	audience := flags.String("audience", "TOKEN_AUDIENCE", "streaming-api", "the aud claim: the resource server the tokens are for")
	keyDir := flags.String("key-dir", "KEY_DIR", "keys", "directory of PEM (PKCS #8) signing keys, all published; the newest by file name signs, and one is generated if none exists")
	algorithm := flags.String("algorithm", "SIGNING_ALGORITHM", issuer.AlgorithmRS256, "signing algorithm: RS256 or ES256")
	hashKeyFile := flags.String("hash-key-file", "HASH_KEY_FILE", "", "file with the hex hash key shared with the edges")
	accessTTL := flags.Duration("access-token-ttl", "ACCESS_TOKEN_TTL", 0, "lifetime of access tokens (default 1h)")
	refreshTTL := flags.Duration("refresh-token-ttl", "REFRESH_TOKEN_TTL", 0, "lifetime of refresh tokens (default 720h)")
	rotateEvery := flags.Duration("rotate-every", "KEY_ROTATE_EVERY", 0, "start a new signing key at this period, for example 720h (default: only on request)")
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

	if *hashKeyFile == "" {
		cli.Fatal(log, fmt.Errorf("--hash-key-file is required"), "invalid configuration")
	}
	hashKey, err := keyfile.Read(*hashKeyFile)
	if err != nil {
		cli.Fatal(log, err, "invalid configuration")
	}

	nc, err := natsinfra.Connect(*natsFlags.URL, "issuer", log, natsFlags.Options()...)
	if err != nil {
		cli.Fatal(log, err, "connecting to NATS failed")
	}
	defer nc.Close()

	is, err := issuer.New(nc, issuer.Config{
		Storage:         natsinfra.Settings{Replicas: *replicas},
		Issuer:          *issuerURL,
		Audience:        *audience,
		KeyDir:          *keyDir,
		Algorithm:       *algorithm,
		HashKey:         hashKey,
		AccessTokenTTL:  *accessTTL,
		RefreshTokenTTL: *refreshTTL,
		RotateEvery:     *rotateEvery,
	}, log)
	if err != nil {
		cli.Fatal(log, err, "invalid configuration")
	}
	cli.ServeDebug(ctx, debug, is.Metrics(), is.Ready, log)
	if err := is.Run(ctx); err != nil {
		cli.Fatal(log, err, "issuer failed")
	}
	if err := nc.Drain(); err != nil {
		log.Warn().Err(err).Msg("draining the NATS connection failed")
	}
}
