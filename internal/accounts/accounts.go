// Package accounts stores the people who can approve a device, with their
// passwords as bcrypt hashes, and checks a sign-in.
package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/kv"
)

// ErrInvalidCredentials is returned by Verify for an unknown username or a
// wrong password alike, so a caller cannot tell which.
var ErrInvalidCredentials = errors.New("accounts: invalid username or password")

// maxPasswordBytes is bcrypt's input limit.
const maxPasswordBytes = 72

// Store reads and writes accounts.
type Store struct {
	bucket *kv.Bucket[events.Account]
	cost   int
	// dummyHash is compared against when the username is unknown, so both
	// failures take the same time. It is made on first use because bcrypt
	// is deliberately slow.
	dummyHash func() []byte
}

// NewStore returns a Store on the accounts bucket that hashes new passwords
// with the given bcrypt cost; zero means bcrypt.DefaultCost.
func NewStore(bucket *kv.Bucket[events.Account], cost int) *Store {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	return &Store{
		bucket: bucket,
		cost:   cost,
		dummyHash: sync.OnceValue(func() []byte {
			// GenerateFromPassword fails only for a cost out of range,
			// which the first Create would report too.
			hash, _ := bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
			return hash
		}),
	}
}

// NormalizeUsername returns the key under which a username is stored.
func NormalizeUsername(username string) string {
	return strings.ToLower(strings.TrimSpace(username))
}

// Create stores a new account. It fails if the username is taken.
func (s *Store) Create(ctx context.Context, username, password string) (events.Account, error) {
	key := NormalizeUsername(username)
	if key == "" || strings.ContainsAny(key, " .*>/\\") {
		return events.Account{}, fmt.Errorf("accounts: invalid username %q", username)
	}
	if password == "" || len(password) > maxPasswordBytes {
		return events.Account{}, fmt.Errorf("accounts: password must be 1 to %d bytes", maxPasswordBytes)
	}

	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return events.Account{}, fmt.Errorf("accounts: hash password: %w", err)
	}
	account := events.Account{ID: "acct_" + rand.Text()[:16], Username: key, PasswordHash: string(hash)}
	if _, err := s.bucket.Create(ctx, key, account); err != nil {
		return events.Account{}, err
	}
	return account, nil
}

// Verify returns the account whose username and password match. It returns
// ErrInvalidCredentials when they do not, and another error when storage
// failed.
func (s *Store) Verify(ctx context.Context, username, password string) (events.Account, error) {
	key := NormalizeUsername(username)
	if key == "" || len(password) > maxPasswordBytes {
		_ = bcrypt.CompareHashAndPassword(s.dummyHash(), []byte(password))
		return events.Account{}, ErrInvalidCredentials
	}

	account, _, err := s.bucket.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		_ = bcrypt.CompareHashAndPassword(s.dummyHash(), []byte(password))
		return events.Account{}, ErrInvalidCredentials
	}
	if err != nil {
		return events.Account{}, err
	}

	if bcrypt.CompareHashAndPassword([]byte(account.PasswordHash), []byte(password)) != nil {
		return events.Account{}, ErrInvalidCredentials
	}
	return account, nil
}
