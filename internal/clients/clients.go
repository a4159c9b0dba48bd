// Package clients keeps an in-memory copy of the OAuth clients stored in KV,
// updated by a watch so that an edge sees a change within moments and reads
// no storage per request, and holds the rules about what a client may ask
// for.
package clients

import (
	"context"
	"slices"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
)

// Registry is a watched copy of the clients bucket.
type Registry struct {
	mu      sync.RWMutex
	clients map[string]events.Client
}

// Watch loads every client and keeps the copy current until ctx ends.
func Watch(ctx context.Context, bucket *kv.Bucket[events.Client]) (*Registry, error) {
	r := &Registry{clients: make(map[string]events.Client)}
	err := bucket.Watch(ctx, func(id string, c events.Client, deleted bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if deleted {
			delete(r.clients, id)
			return
		}
		r.clients[id] = c
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Lookup returns the client with id.
func (r *Registry) Lookup(id string) (events.Client, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.clients[id]
	return c, ok
}

// Scopes returns every scope some client may request, sorted.
func (r *Registry) Scopes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var all []string
	for _, c := range r.clients {
		for _, s := range c.Scopes {
			if !slices.Contains(all, s) {
				all = append(all, s)
			}
		}
	}
	slices.Sort(all)
	return all
}

// AllowsOrigin reports whether a browser app at origin may call the edge for
// c (CORS).
func AllowsOrigin(c events.Client, origin string) bool {
	return origin != "" && slices.Contains(c.AllowedOrigins, origin)
}

// AnyAllowsOrigin reports whether some client accepts origin. A CORS
// preflight carries no client_id, so it is answered for every origin some
// client accepts, and the request that follows is checked against its own
// client.
func (r *Registry) AnyAllowsOrigin(origin string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, c := range r.clients {
		if AllowsOrigin(c, origin) {
			return true
		}
	}
	return false
}

// AllowsGrant reports whether c may use grantType.
func AllowsGrant(c events.Client, grantType string) bool {
	return slices.Contains(c.Grants, grantType)
}

// AllowsScopes reports whether every scope in requested is allowed for c.
func AllowsScopes(c events.Client, requested []string) bool {
	for _, s := range requested {
		if !slices.Contains(c.Scopes, s) {
			return false
		}
	}
	return true
}

// VerifySecret reports whether secret is the secret of confidential client c.
func VerifySecret(c events.Client, secret string) bool {
	if c.Public || c.SecretHash == "" || secret == "" {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(c.SecretHash), []byte(secret)) == nil
}

// HashSecret returns the hash to store for a confidential client's secret.
func HashSecret(secret string) (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	return string(hash), nil
}
