// Package kv wraps a JetStream key-value bucket with typed values encoded by
// package events, and turns the client's errors into three sentinels that
// callers test with errors.Is.
package kv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamco/deviceauth/events"
)

var (
	// ErrNotFound means the key has no value, or its value was deleted.
	ErrNotFound = errors.New("kv: key not found")
	// ErrExists means Create found a value already stored under the key.
	ErrExists = errors.New("kv: key exists")
	// ErrConflict means Update lost a compare-and-set: the key changed since
	// the revision the caller read. The caller re-reads and decides again.
	ErrConflict = errors.New("kv: revision conflict")
)

// Bucket is a typed view of a JetStream KV bucket.
type Bucket[T any] struct {
	kv jetstream.KeyValue
	// onDecodeError is called by Watch for a value that does not decode,
	// which Watch then skips.
	onDecodeError func(key string, err error)
	// leader, when set, serves Get from the stream leader (see
	// NewLeaderRead).
	leader *nats.Conn
}

// OnDecodeError sets the function Watch calls for a value that does not
// decode, so the caller can log it, and returns b.
func (b *Bucket[T]) OnDecodeError(fn func(key string, err error)) *Bucket[T] {
	b.onDecodeError = fn
	return b
}

// defaultTimeout bounds a leader read whose context has no deadline, as the
// client does for its own requests.
const defaultTimeout = 5 * time.Second

// New returns a typed view of kv.
func New[T any](kv jetstream.KeyValue) *Bucket[T] {
	return &Bucket[T]{kv: kv}
}

// Name returns the bucket's name.
func (b *Bucket[T]) Name() string { return b.kv.Bucket() }

// Get returns the value under key and its revision. It returns ErrNotFound
// when there is none.
func (b *Bucket[T]) Get(ctx context.Context, key string) (T, uint64, error) {
	if b.leader != nil {
		return b.leaderGet(ctx, key)
	}
	var value T
	entry, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return value, 0, fmt.Errorf("%s/%s: %w", b.kv.Bucket(), shortKey(key), ErrNotFound)
	}
	if err != nil {
		return value, 0, fmt.Errorf("kv: get from %s: %w", b.kv.Bucket(), err)
	}

	if err := events.Decode(entry.Value(), &value); err != nil {
		return value, 0, err
	}
	return value, entry.Revision(), nil
}

// Create stores value under key only if the key has no value. It returns
// ErrExists otherwise.
func (b *Bucket[T]) Create(ctx context.Context, key string, value T) (uint64, error) {
	data, err := events.Encode(value)
	if err != nil {
		return 0, err
	}

	rev, err := b.kv.Create(ctx, key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s/%s: %w", b.kv.Bucket(), shortKey(key), ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("kv: create in %s: %w", b.kv.Bucket(), err)
	}
	return rev, nil
}

// Update stores value under key only if the key's revision is still
// revision. It returns ErrConflict otherwise.
func (b *Bucket[T]) Update(ctx context.Context, key string, value T, revision uint64) (uint64, error) {
	data, err := events.Encode(value)
	if err != nil {
		return 0, err
	}

	rev, err := b.kv.Update(ctx, key, data, revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s/%s: %w", b.kv.Bucket(), shortKey(key), ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("kv: update in %s: %w", b.kv.Bucket(), err)
	}
	return rev, nil
}

// Put stores value under key whatever was there.
func (b *Bucket[T]) Put(ctx context.Context, key string, value T) (uint64, error) {
	data, err := events.Encode(value)
	if err != nil {
		return 0, err
	}

	rev, err := b.kv.Put(ctx, key, data)
	if err != nil {
		return 0, fmt.Errorf("kv: put in %s: %w", b.kv.Bucket(), err)
	}
	return rev, nil
}

// Delete removes the value under key. Deleting a missing key is not an error.
func (b *Bucket[T]) Delete(ctx context.Context, key string) error {
	if err := b.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("kv: delete from %s: %w", b.kv.Bucket(), err)
	}
	return nil
}

// Watch calls fn with every value in the bucket and then with every change,
// until ctx ends. A deleted key is passed with deleted set. It returns once
// the initial values have been passed, so callers can serve from what fn
// built.
func (b *Bucket[T]) Watch(ctx context.Context, fn func(key string, value T, deleted bool)) error {
	watcher, err := b.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("kv: watch %s: %w", b.kv.Bucket(), err)
	}

	initial := make(chan struct{})
	go func() {
		defer watcher.Stop()
		caughtUp := false
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-watcher.Updates():
				if !ok {
					return
				}
				// A nil entry marks the end of the initial values.
				if entry == nil {
					if !caughtUp {
						caughtUp = true
						close(initial)
					}
					continue
				}
				var value T
				deleted := entry.Operation() != jetstream.KeyValuePut
				if !deleted {
					if err := events.Decode(entry.Value(), &value); err != nil {
						if b.onDecodeError != nil {
							b.onDecodeError(entry.Key(), err)
						}
						continue
					}
				}
				fn(entry.Key(), value, deleted)
			}
		}
	}()

	select {
	case <-initial:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shortKey keeps error messages readable and keeps whole keyed hashes out of
// logs, where they would let a reader follow one code across every line.
func shortKey(key string) string {
	if len(key) > 12 {
		return key[:12] + "…"
	}
	return key
}

// Keys returns the keys with a value, each once and in no particular order:
// all of them, or those matching one of filters (subject-style patterns
// such as "acct_1.>").
func (b *Bucket[T]) Keys(ctx context.Context, filters ...string) ([]string, error) {
	var (
		lister jetstream.KeyLister
		err    error
	)
	if len(filters) == 0 {
		lister, err = b.kv.ListKeys(ctx)
	} else {
		lister, err = b.kv.ListKeysFiltered(ctx, filters...)
	}
	if err != nil {
		return nil, fmt.Errorf("kv: list keys of %s: %w", b.kv.Bucket(), err)
	}
	defer func() { _ = lister.Stop() }()

	seen := make(map[string]bool)
	var keys []string
	for key := range lister.Keys() {
		// The lister can report a key twice while the bucket changes.
		if !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	// The lister ends its channel early, without an error, when ctx ends.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kv: list keys of %s: %w", b.kv.Bucket(), err)
	}
	return keys, nil
}
