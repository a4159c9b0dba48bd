// Package admin manages clients and accounts in their KV buckets, for the
// admin command. Edges pick up client changes through their watch, without a
// restart.
package admin

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/clients"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/oauth"
)

// knownGrants are the grant types a client may be allowed.
var knownGrants = []string{oauth.GrantTypeDeviceCode, oauth.GrantTypeRefreshToken}

// GrantAliases lets an operator write short grant names.
var GrantAliases = map[string]string{
	"device_code":   oauth.GrantTypeDeviceCode,
	"refresh_token": oauth.GrantTypeRefreshToken,
}

// ValidateClient reports every problem with c at once.
func ValidateClient(c events.Client) error {
	var errs []error
	if c.ID == "" || strings.ContainsAny(c.ID, " \t*>./\\") || len(c.ID) > 128 {
		errs = append(errs, fmt.Errorf("client id %q must be 1 to 128 characters without spaces, dots, slashes, '*' or '>'", c.ID))
	}
	if strings.TrimSpace(c.Name) == "" {
		errs = append(errs, errors.New("name is missing: people see it on the consent page"))
	}
	if len(c.Grants) == 0 {
		errs = append(errs, errors.New("grants are missing"))
	}
	for _, g := range c.Grants {
		if !slices.Contains(knownGrants, g) {
			errs = append(errs, fmt.Errorf("grant %q is not supported (use device_code or refresh_token)", g))
		}
	}
	for _, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \"\\") {
			errs = append(errs, fmt.Errorf("scope %q is not a valid scope token", s))
		}
	}
	if c.CodeLifetimeSeconds != 0 && (c.CodeLifetimeSeconds < 60 || c.CodeLifetimeSeconds > 1800) {
		errs = append(errs, fmt.Errorf("code lifetime %ds must be between 60 and 1800 seconds", c.CodeLifetimeSeconds))
	}
	if c.IntervalSeconds < 0 || c.IntervalSeconds > 60 {
		errs = append(errs, fmt.Errorf("poll interval %ds must be between 1 and 60 seconds", c.IntervalSeconds))
	}
	// The issuer returns a refresh token for offline_access, so a client
	// that may ask for it must be able to use it.
	if slices.Contains(c.Scopes, "offline_access") && !slices.Contains(c.Grants, oauth.GrantTypeRefreshToken) {
		errs = append(errs, errors.New("scope offline_access needs the refresh_token grant"))
	}
	if !c.Public && c.SecretHash == "" {
		errs = append(errs, errors.New("a confidential client needs a secret"))
	}
	for _, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			errs = append(errs, fmt.Errorf("origin %q must be scheme://host[:port] without a path", o))
		}
	}
	return errors.Join(errs...)
}

// NewSecret returns a random client secret and its hash for storage.
func NewSecret() (secret, hash string, err error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", err
	}
	secret = base64.RawURLEncoding.EncodeToString(raw)
	hash, err = clients.HashSecret(secret)
	return secret, hash, err
}

// CreateClient stores a new client. For a confidential client it generates
// the secret and returns it; only its hash is stored, so it cannot be shown
// again.
func CreateClient(ctx context.Context, bucket *kv.Bucket[events.Client], c events.Client) (string, error) {
	var secret string
	if !c.Public {
		var err error
		secret, c.SecretHash, err = NewSecret()
		if err != nil {
			return "", err
		}
	}
	if err := ValidateClient(c); err != nil {
		return "", err
	}
	if _, err := bucket.Create(ctx, c.ID, c); err != nil {
		if errors.Is(err, kv.ErrExists) {
			return "", fmt.Errorf("client %q exists; use update", c.ID)
		}
		return "", err
	}
	return secret, nil
}

// UpdateClient applies change to the stored client by compare-and-set and
// stores the result after validating it.
func UpdateClient(ctx context.Context, bucket *kv.Bucket[events.Client], id string, change func(*events.Client) error) (events.Client, error) {
	for {
		c, rev, err := bucket.Get(ctx, id)
		if errors.Is(err, kv.ErrNotFound) {
			return events.Client{}, fmt.Errorf("client %q not found", id)
		}
		if err != nil {
			return events.Client{}, err
		}
		if err := change(&c); err != nil {
			return events.Client{}, err
		}
		if err := ValidateClient(c); err != nil {
			return events.Client{}, err
		}
		_, err = bucket.Update(ctx, id, c, rev)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		return c, err
	}
}
