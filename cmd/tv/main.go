// Command tv is a reference TV client for the device flow. It requests codes
// from the server, draws the QR code and the user code in the terminal,
// waits with held polls while a person approves on a phone, and prints who
// it is signed in as. Run "edge --dev" first, then "go run ./cmd/tv".
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/streamco/deviceauth/internal/cli"
	"github.com/streamco/deviceauth/internal/tvclient"
)

func main() {
	flags := cli.NewFlags("tv")
	server := flags.String("server", "TV_SERVER", "http://127.0.0.1:8080", "base URL of the authorization server")
	clientID := flags.String("client-id", "TV_CLIENT_ID", "tv-app", "OAuth client_id of this app")
	scope := flags.String("scope", "TV_SCOPE", "profile offline_access", "space-separated scopes to request")
	hold := flags.Duration("hold", "TV_HOLD", 20*time.Second, "wait requested with Prefer: wait on each poll, in whole seconds; 0s polls without holding")
	agent := flags.String("user-agent", "TV_USER_AGENT", "deviceauth-reference-tv/1 (SmartTV)", "User-Agent header; the consent page names the device kind from it")
	light := flags.Bool("light-background", "TV_LIGHT_BACKGROUND", false, "draw the QR code for dark text on a light terminal background")
	flags.Parse(os.Args[1:])

	ctx, stop := cli.SignalContext()
	defer stop()

	_, _, err := tvclient.SignIn(ctx, tvclient.Config{
		Server:         *server,
		ClientID:       *clientID,
		Scopes:         strings.Fields(*scope),
		Hold:           *hold,
		DarkBackground: !*light,
		UserAgent:      *agent,
		Out:            os.Stdout,
	})
	switch {
	case errors.Is(err, tvclient.ErrDenied):
		fmt.Fprintln(os.Stderr, "The request was denied on the phone.")
		os.Exit(1)
	case errors.Is(err, tvclient.ErrExpired):
		fmt.Fprintln(os.Stderr, "The code expired. Run the command again for a new one.")
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
