// Command admin manages clients and accounts and requests the issuers to rotate
// their signing keys. It talks to NATS directly; edges see client changes
// within a second, without a restart.
//
//	admin [--nats URL] clients list
//	admin [--nats URL] clients show ID
//	admin [--nats URL] clients create --id ID --name NAME [--confidential] [--scopes a,b] [--grants device_code,refresh_token]
//	                                  [--code-lifetime 10m] [--interval 5s] [--device-flow=false] [--origins https://app.example]
//	admin [--nats URL] clients update ID [the same flags as create]
//	admin [--nats URL] clients rotate-secret ID
//	admin [--nats URL] clients delete ID
//	admin [--nats URL] accounts create --username NAME   (reads the password from standard input)
//	admin [--nats URL] keys rotate
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/accounts"
	"github.com/streamco/deviceauth/internal/cli"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
)

const usage = `usage: admin [--nats URL] [--replicas N] COMMAND

commands:
  clients list | show ID | create --id ID ... | update ID ... | rotate-secret ID | delete ID
  accounts create --username NAME      (password on standard input)
  keys rotate                          (every running issuer starts a new signing key)

Run "admin clients create --help" for the client flags.`

func main() {
	flags := cli.NewFlags("admin")
	natsFlags := flags.NATS()
	replicas := flags.Int("replicas", "NATS_REPLICAS", 1, "replicas of each bucket, if this command creates it")
	flags.Usage = func() {
		fmt.Fprintln(os.Stderr, usage)
		fmt.Fprintln(os.Stderr, "\nflags:")
		flags.PrintDefaults()
	}
	flags.Parse(os.Args[1:])
	args := flags.Args()
	if len(args) < 2 {
		flags.Usage()
		os.Exit(2)
	}
	// Help for a subcommand needs no server.
	if args[0] == "clients" && slices.ContainsFunc(args[2:], isHelp) {
		newClientFlags("clients " + args[1]).fs.PrintDefaults()
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := append(natsFlags.Options(), nats.MaxReconnects(0))
	nc, err := natsinfra.Connect(*natsFlags.URL, "admin", zerolog.Nop(), opts...)
	if err != nil {
		fail(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fail(err)
	}
	settings := natsinfra.Settings{Replicas: *replicas}

	switch args[0] {
	case "clients":
		kvb, err := natsinfra.EnsureBucket(ctx, js, events.BucketClients, settings)
		if err != nil {
			fail(err)
		}
		err = runClients(ctx, kv.New[events.Client](kvb), args[1], args[2:], os.Stdout)
		if err != nil {
			fail(err)
		}
	case "accounts":
		kvb, err := natsinfra.EnsureBucket(ctx, js, events.BucketAccounts, settings)
		if err != nil {
			fail(err)
		}
		if err := runAccounts(ctx, kv.New[events.Account](kvb), args[1], args[2:], os.Stdin, os.Stdout); err != nil {
			fail(err)
		}
	case "keys":
		if args[1] != "rotate" {
			fail(fmt.Errorf("unknown keys command %q (want rotate)", args[1]))
		}
		if err := rotateKeys(nc, os.Stdout); err != nil {
			fail(err)
		}
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "admin:", err)
	os.Exit(1)
}

func runAccounts(ctx context.Context, bucket *kv.Bucket[events.Account], command string, args []string, stdin io.Reader, out io.Writer) error {
	if command != "create" {
		return fmt.Errorf("unknown accounts command %q (want create)", command)
	}
	fs := cli.NewFlags("accounts create")
	username := fs.FlagSet.String("username", "", "username to sign in with")
	fs.Parse(args)

	password, err := io.ReadAll(io.LimitReader(stdin, 1024))
	if err != nil {
		return err
	}
	account, err := accounts.NewStore(bucket, 0).Create(ctx, *username, strings.TrimRight(string(password), "\r\n"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "created account %s (%s)\n", account.Username, account.ID)
	return nil
}

func rotateKeys(nc *nats.Conn, out io.Writer) error {
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(events.SubjectRotateKeys, inbox, nil); err != nil {
		return err
	}

	// Every issuer replies. Collect replies until none arrives for 2 seconds.
	answered := 0
	for {
		msg, err := sub.NextMsg(2 * time.Second)
		if errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			return err
		}
		var reply events.RotateKeysReply
		if err := json.Unmarshal(msg.Data, &reply); err != nil {
			return err
		}
		answered++
		if reply.Error != "" {
			fmt.Fprintf(out, "an issuer failed: %s\n", reply.Error)
			continue
		}
		fmt.Fprintf(out, "an issuer now signs with key %s\n", reply.KeyID)
	}
	if answered == 0 {
		return errors.New("no issuer replied within 2 seconds; check that an issuer is running on this NATS server")
	}
	return nil
}
