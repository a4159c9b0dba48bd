package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/admin"
	"github.com/streamco/deviceauth/internal/kv"
)

// clientFlags are the settings of a client on the command line. Only flags
// given explicitly change a client on update.
type clientFlags struct {
	fs           *flag.FlagSet
	id           *string
	name         *string
	confidential *bool
	scopes       *string
	grants       *string
	codeLifetime *time.Duration
	interval     *time.Duration
	deviceFlow   *bool
	origins      *string
}

func newClientFlags(name string) *clientFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &clientFlags{
		fs:           fs,
		id:           fs.String("id", "", "client_id (create only)"),
		name:         fs.String("name", "", "name shown to people on the consent page"),
		confidential: fs.Bool("confidential", false, "a confidential client with a generated secret (create only)"),
		scopes:       fs.String("scopes", "", "comma-separated scopes the client may request"),
		grants:       fs.String("grants", "device_code", "comma-separated grants: device_code, refresh_token"),
		codeLifetime: fs.Duration("code-lifetime", 0, "lifetime of device codes, 1m to 30m (0: the edge default)"),
		interval:     fs.Duration("interval", 0, "poll interval, whole seconds from 1s to 60s (0: the edge default)"),
		deviceFlow:   fs.Bool("device-flow", true, "allow the device flow (false switches it off for this client)"),
		origins:      fs.String("origins", "", "comma-separated web origins allowed to call the edge (CORS)"),
	}
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// apply copies the flags that were set onto c.
func (f *clientFlags) apply(c *events.Client, all bool) error {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	given := func(name string) bool { return all || set[name] }

	if given("name") {
		c.Name = *f.name
	}
	if given("scopes") {
		c.Scopes = splitList(*f.scopes)
	}
	if given("grants") {
		c.Grants = nil
		for _, g := range splitList(*f.grants) {
			if full, ok := admin.GrantAliases[g]; ok {
				g = full
			}
			c.Grants = append(c.Grants, g)
		}
	}
	if given("code-lifetime") {
		c.CodeLifetimeSeconds = int(f.codeLifetime.Seconds())
	}
	if given("interval") {
		if *f.interval%time.Second != 0 {
			return fmt.Errorf("interval %s must be whole seconds", *f.interval)
		}
		c.IntervalSeconds = int(f.interval.Seconds())
	}
	if given("device-flow") {
		c.DeviceFlowDisabled = !*f.deviceFlow
	}
	if given("origins") {
		c.AllowedOrigins = splitList(*f.origins)
	}
	return nil
}

func runClients(ctx context.Context, bucket *kv.Bucket[events.Client], command string, args []string, out io.Writer) error {
	switch command {
	case "list":
		ids, err := bucket.Keys(ctx)
		if err != nil {
			return err
		}
		slices.Sort(ids)
		for _, id := range ids {
			c, _, err := bucket.Get(ctx, id)
			if err != nil {
				return err
			}
			kind := "public"
			if !c.Public {
				kind = "confidential"
			}
			fmt.Fprintf(out, "%s\t%s\t%s\tscopes=%s\n", c.ID, kind, c.Name, strings.Join(c.Scopes, ","))
		}
		return nil

	case "show":
		if len(args) != 1 {
			return errors.New("usage: clients show ID")
		}
		c, _, err := bucket.Get(ctx, args[0])
		if err != nil {
			return fmt.Errorf("client %q: %w", args[0], err)
		}
		c.SecretHash = ""
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(c)

	case "create":
		f := newClientFlags("clients create")
		if err := f.fs.Parse(args); err != nil {
			return err
		}
		c := events.Client{ID: *f.id, Public: !*f.confidential}
		if err := f.apply(&c, true); err != nil {
			return err
		}
		secret, err := admin.CreateClient(ctx, bucket, c)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "created client %s\n", c.ID)
		if secret != "" {
			fmt.Fprintf(out, "client_secret: %s\n(store it now: only its hash is kept)\n", secret)
		}
		return nil

	case "update":
		if len(args) < 1 {
			return errors.New("usage: clients update ID [flags]")
		}
		f := newClientFlags("clients update")
		if err := f.fs.Parse(args[1:]); err != nil {
			return err
		}
		_, err := admin.UpdateClient(ctx, bucket, args[0], func(c *events.Client) error { return f.apply(c, false) })
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "updated client %s\n", args[0])
		return nil

	case "rotate-secret":
		if len(args) != 1 {
			return errors.New("usage: clients rotate-secret ID")
		}
		var secret string
		_, err := admin.UpdateClient(ctx, bucket, args[0], func(c *events.Client) error {
			if c.Public {
				return fmt.Errorf("client %q is public and has no secret", c.ID)
			}
			var err error
			secret, c.SecretHash, err = admin.NewSecret()
			return err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "client_secret: %s\n(the old secret no longer works)\n", secret)
		return nil

	case "delete":
		if len(args) != 1 {
			return errors.New("usage: clients delete ID")
		}
		if _, _, err := bucket.Get(ctx, args[0]); err != nil {
			return fmt.Errorf("client %q: %w", args[0], err)
		}
		if err := bucket.Delete(ctx, args[0]); err != nil {
			return err
		}
		fmt.Fprintf(out, "deleted client %s\n", args[0])
		return nil

	default:
		return fmt.Errorf("unknown clients command %q (want list, show, create, update, rotate-secret or delete)", command)
	}
}
