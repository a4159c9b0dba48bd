// Package worker runs a JetStream durable consumer and owns what happens to
// each message: acknowledge after the handler succeeded, redeliver with a
// growing delay after a transient failure, and publish to the dead-letter
// subject what can never succeed.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/natsinfra"
)

// ErrPermanent marks a handler error that redelivery cannot fix, such as an
// event that does not decode. Wrap it with %w.
var ErrPermanent = errors.New("permanent failure")

// Handler processes one message. It must be idempotent: a message can be
// delivered again after the handler stored its result but before the
// acknowledgement reached the server.
type Handler func(ctx context.Context, log zerolog.Logger, msg jetstream.Msg) error

// Config names the consumer and bounds the work on each message.
type Config struct {
	// Durable is the durable consumer name from package events.
	Durable string
	// FilterSubject selects the events this worker consumes.
	FilterSubject string
	// AckWait is how long the server waits for an acknowledgement before it
	// redelivers. Zero means 30 seconds.
	AckWait time.Duration
	// MaxDeliver is how often a message is tried before it is dead-lettered.
	// Zero means 20.
	MaxDeliver int
	// HandlerTimeout bounds one call of the handler. Zero means 10 seconds.
	HandlerTimeout time.Duration
	// Concurrency is how many messages are handled at once. Zero means 16.
	// Each handler spends most of its time waiting for replicated KV
	// writes, so one at a time would cap a worker at a few dozen events a
	// second on a cluster.
	Concurrency int
	// Metrics counts deliveries by outcome. Nil counts nothing.
	Metrics *Metrics
}

func (c *Config) setDefaults() {
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 20
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 10 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
}

// Run creates the durable consumer if it is missing and processes messages
// until ctx ends. It finishes the messages in hand before it returns.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config, log zerolog.Logger, handle Handler) error {
	cfg.setDefaults()
	cfg.Metrics.start(cfg.Durable)

	var consumer jetstream.Consumer
	err := natsinfra.Retry(ctx, func(ctx context.Context) error {
		var err error
		consumer, err = js.CreateOrUpdateConsumer(ctx, events.StreamDevice, consumerConfig(cfg))
		return err
	})
	if err != nil {
		return fmt.Errorf("worker: create consumer %s: %w", cfg.Durable, err)
	}

	// The consume callback blocks while Concurrency messages are in hand,
	// so the client stops pulling rather than buffering without bound, and
	// the wait group lets a stop finish every message already started.
	slots := make(chan struct{}, cfg.Concurrency)
	var inHand sync.WaitGroup
	// The client can still deliver a buffered message after Closed, when
	// its connection was closed under it; stopped turns such a message
	// away, unacknowledged, so it is redelivered elsewhere and the wait
	// group is never added to while Run waits on it.
	var mu sync.Mutex
	stopped := false
	consumeCtx, err := consumer.Consume(func(msg jetstream.Msg) {
		slots <- struct{}{}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			<-slots
			return
		}
		inHand.Go(func() {
			defer func() { <-slots }()
			process(ctx, js, cfg, log, handle, msg)
		})
	}, jetstream.PullMaxMessages(2*cfg.Concurrency),
		// A pull request lives on the consumer's leader. When a cluster node
		// dies with it, only a missed heartbeat tells the client to pull
		// again from the new leader; the client's defaults (30 s requests,
		// 15 s heartbeats) would stall the worker for up to half a minute.
		jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("worker: consume %s: %w", cfg.Durable, err)
	}
	log.Info().Str("consumer", cfg.Durable).Msg("consuming")

	<-ctx.Done()
	consumeCtx.Drain()
	<-consumeCtx.Closed()
	mu.Lock()
	stopped = true
	mu.Unlock()
	inHand.Wait()
	log.Info().Str("consumer", cfg.Durable).Msg("stopped consuming")
	return nil
}

func consumerConfig(cfg Config) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		FilterSubject: cfg.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		// The worker dead-letters on the last delivery itself, so the
		// server's limit is one more and only stops a crash loop.
		MaxDeliver:    cfg.MaxDeliver + 1,
		MaxAckPending: 1000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

func process(ctx context.Context, js jetstream.JetStream, cfg Config, log zerolog.Logger, handle Handler, msg jetstream.Msg) {
	var delivered uint64 = 1
	if meta, err := msg.Metadata(); err == nil {
		delivered = meta.NumDelivered
	}
	msgLog := log.With().Str("subject", msg.Subject()).Uint64("delivery", delivered).Logger()
	if delivered > 1 {
		cfg.Metrics.redelivered(cfg.Durable)
	}

	// The handler gets its own deadline, detached from shutdown, so a stop
	// signal does not abandon a message halfway through.
	handlerCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.HandlerTimeout)
	defer cancel()

	started := time.Now()
	err := handle(handlerCtx, msgLog, msg)
	cfg.Metrics.handled(cfg.Durable, time.Since(started).Seconds())
	switch {
	case err == nil:
		if err := msg.DoubleAck(handlerCtx); err != nil {
			cfg.Metrics.outcome(cfg.Durable, OutcomeAckFailed)
			msgLog.Warn().Err(err).Msg("acknowledgement failed; the message will be redelivered")
			return
		}
		cfg.Metrics.outcome(cfg.Durable, OutcomeAcked)

	case errors.Is(err, ErrPermanent) || delivered >= uint64(cfg.MaxDeliver):
		deadLetter(handlerCtx, js, cfg, msgLog, msg, err)

	default:
		cfg.Metrics.outcome(cfg.Durable, OutcomeRetried)
		delay := backoff(delivered)
		msgLog.Warn().Err(err).Dur("retry_in", delay).Msg("handler failed; retrying")
		if err := msg.NakWithDelay(delay); err != nil {
			msgLog.Warn().Err(err).Msg("negative acknowledgement failed")
		}
	}
}

func deadLetter(ctx context.Context, js jetstream.JetStream, cfg Config, log zerolog.Logger, msg jetstream.Msg, cause error) {
	durable := cfg.Durable
	dead := nats.NewMsg(events.SubjectDeadLetter + "." + durable)
	dead.Data = msg.Data()
	dead.Header.Set(events.DeadLetterReasonHeader, cause.Error())
	dead.Header.Set(events.DeadLetterSubjectHeader, msg.Subject())

	if _, err := js.PublishMsg(ctx, dead); err != nil {
		log.Error().Err(err).AnErr("cause", cause).Msg("dead-letter publish failed; the message will be redelivered")
		cfg.Metrics.outcome(durable, OutcomeRetried)
		_ = msg.NakWithDelay(backoff(10))
		return
	}
	cfg.Metrics.outcome(durable, OutcomeDeadLettered)
	cfg.Metrics.deadLetter(durable)
	log.Error().Err(cause).Msg("message dead-lettered")
	if err := msg.Term(); err != nil {
		log.Warn().Err(err).Msg("terminating dead-lettered message failed")
	}
}

// backoff returns the redelivery delay after the given number of deliveries:
// 100 ms doubling up to 10 s.
func backoff(delivered uint64) time.Duration {
	delay := 100 * time.Millisecond
	for i := uint64(1); i < delivered && delay < 10*time.Second; i++ {
		delay *= 2
	}
	return min(delay, 10*time.Second)
}
