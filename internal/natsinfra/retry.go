package natsinfra

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// attemptTimeout bounds one JetStream API request made by Retry. Creating
// a replicated stream waits for its raft group to form, which on a busy
// cluster takes longer than the client's default of 5 seconds.
const attemptTimeout = 10 * time.Second

// Retry calls op until it succeeds, fails with an error that waiting cannot
// fix, or ctx ends. It waits 250 ms after the first failure, doubling up to
// 5 s. A service starting while its cluster is still electing leaders, or
// while several services create the same buckets, therefore waits instead
// of exiting, and reports not ready meanwhile.
func Retry(ctx context.Context, op func(ctx context.Context) error) error {
	delay := 250 * time.Millisecond
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(attemptCtx)
		cancel()
		if err == nil || !transient(ctx, err) {
			return err
		}

		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// transient reports whether err may go away by waiting: a timed out
// request while ctx is still alive, no JetStream server answering, or a
// cluster that cannot yet place or lead the asset.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 10005: no suitable peers for placement; 10008: the cluster is
		// not available; 10009: not the leader. HTTP-style 503 and 500
		// codes come from a JetStream that is starting or recovering.
		switch apiErr.ErrorCode {
		case 10005, 10008, 10009:
			return true
		}
		return apiErr.Code == 503 || apiErr.Code == 500
	}
	return false
}
