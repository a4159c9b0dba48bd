package e2e

import (
	"context"
	"net/http"
	"strconv"

	"golang.org/x/oauth2"
)

func itoa(n int) string { return strconv.Itoa(n) }

// contextWithClient makes golang.org/x/oauth2 use client for its requests.
func contextWithClient(ctx context.Context, client *http.Client) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, client)
}
