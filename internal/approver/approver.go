// Package approver turns a person's decision into the next state of the
// device code: it consumes decision events, moves the code record from
// pending to approved or denied by compare-and-set, and queues approved
// grants for the issuer.
package approver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/streamco/deviceauth/events"
	"github.com/streamco/deviceauth/internal/codes"
	"github.com/streamco/deviceauth/internal/kv"
	"github.com/streamco/deviceauth/internal/natsinfra"
	"github.com/streamco/deviceauth/internal/ops"
	"github.com/streamco/deviceauth/internal/worker"
)

// Config configures the approver.
type Config struct {
	Storage natsinfra.Settings
	Worker  worker.Config
	// Now is the clock of the code statistics. Nil means time.Now.
	Now func() time.Time
}

// Approver consumes decisions.
type Approver struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log zerolog.Logger

	registry *prometheus.Registry
	stats    *codeStats
}

// New returns an approver that uses nc.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Approver, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("approver: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	registry := prometheus.NewRegistry()
	stats := newCodeStats(cfg.Now)
	registry.MustRegister(stats)
	cfg.Worker.Metrics = worker.NewMetrics(registry)
	cfg.Worker.Durable = events.ConsumerApprover
	cfg.Worker.FilterSubject = events.Subject(events.SubjectDecision, "*")
	return &Approver{
		cfg:      cfg,
		nc:       nc,
		js:       js,
		log:      log.With().Str("service", "approver").Logger(),
		registry: registry,
		stats:    stats,
	}, nil
}

// Metrics returns the approver's own registry. Each approver has its own, so
// several services in one process never share or clash over metrics.
func (a *Approver) Metrics() *prometheus.Registry { return a.registry }

// Ready reports whether NATS and the codes bucket are reachable.
func (a *Approver) Ready(ctx context.Context) error {
	return ops.NATSReady(a.nc, a.js, events.BucketCodes)(ctx)
}

// Run creates what the approver needs and consumes until ctx ends.
func (a *Approver) Run(ctx context.Context) error {
	if _, err := natsinfra.EnsureStream(ctx, a.js, a.cfg.Storage); err != nil {
		return err
	}
	buckets, err := natsinfra.EnsureBuckets(ctx, a.js, a.cfg.Storage, events.BucketCodes)
	if err != nil {
		return err
	}
	records := kv.NewLeaderRead[events.CodeRecord](buckets[events.BucketCodes], a.nc)
	err = natsinfra.Retry(ctx, func(context.Context) error { return a.stats.follow(ctx, records) })
	if err != nil {
		return fmt.Errorf("approver: follow code states: %w", err)
	}

	return worker.Run(ctx, a.js, a.cfg.Worker, a.log, func(ctx context.Context, log zerolog.Logger, msg jetstream.Msg) error {
		var d events.Decision
		if err := events.Decode(msg.Data(), &d); err != nil {
			return fmt.Errorf("%w: %w", worker.ErrPermanent, err)
		}
		return a.decide(ctx, log.With().Str("code_id", codes.LogID(d.CodeID)).Logger(), records, d)
	})
}

// decide applies d to the code record. It re-reads the record on every
// attempt, so a redelivered or duplicate decision finds the state it already
// caused and changes nothing.
func (a *Approver) decide(ctx context.Context, log zerolog.Logger, records *kv.Bucket[events.CodeRecord], d events.Decision) error {
	for {
		rec, rev, err := records.Get(ctx, d.CodeID)
		if errors.Is(err, kv.ErrNotFound) {
			log.Debug().Msg("decision for a code that no longer exists")
			return nil
		}
		if err != nil {
			return err
		}

		switch rec.State {
		case events.StatePending:
			// The decision counts when the person made it, not when this
			// worker got to it: an approver that was down for a while must
			// not turn a timely approval into expired_token.
			if !d.DecidedAt.Before(rec.ExpiresAt) {
				log.Info().Msg("decision made after the code expired; ignored")
				return nil
			}

		case events.StateApproved:
			// A crash after the update and before the publish below left
			// the grant unqueued. Publishing again is safe because the
			// stream drops duplicates by message id and the issuer re-reads
			// the record.
			if d.Approved && d.AccountID == rec.AccountID {
				return a.queueGrant(ctx, d.CodeID, rec)
			}
			return nil

		default:
			log.Debug().Str("state", string(rec.State)).Msg("decision for a code already decided")
			return nil
		}

		rec.AccountID = d.AccountID
		rec.Username = d.Username
		rec.DecidedAt = d.DecidedAt
		rec.State = events.StateDenied
		if d.Approved {
			rec.State = events.StateApproved
		}

		_, err = records.Update(ctx, d.CodeID, rec, rev)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}

		if !d.Approved {
			log.Info().Str("client_id", rec.ClientID).Str("account_id", d.AccountID).Msg("device authorization denied")
			return nil
		}
		log.Info().Str("client_id", rec.ClientID).Str("account_id", d.AccountID).Msg("device authorization approved")
		return a.queueGrant(ctx, d.CodeID, rec)
	}
}

func (a *Approver) queueGrant(ctx context.Context, codeID string, rec events.CodeRecord) error {
	data, err := events.Encode(events.GrantApproved{
		CodeID:     codeID,
		ClientID:   rec.ClientID,
		AccountID:  rec.AccountID,
		ApprovedAt: rec.DecidedAt,
	})
	if err != nil {
		return err
	}

	_, err = a.js.Publish(ctx, events.Subject(events.SubjectGrantApproved, codeID), data,
		jetstream.WithMsgID("approved-"+codeID))
	if err != nil {
		return fmt.Errorf("approver: queue grant: %w", err)
	}
	return nil
}
