package kv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamco/deviceauth/events"
)

// NewLeaderRead returns a typed view of kv whose Get requests the leader of the
// bucket's stream, through nc, instead of any replica.
//
// The client's KV reads are direct gets, which any replica of a replicated
// bucket may answer, including one that has not yet applied a write the
// leader already acknowledged. For a state machine that is wrong: an issuer
// reading a just-approved code from such a replica sees it pending and drops
// the grant, and a device polling right after its code was created is told
// the code does not exist. The leader answers only from committed state.
func NewLeaderRead[T any](kv jetstream.KeyValue, nc *nats.Conn) *Bucket[T] {
	return &Bucket[T]{kv: kv, leader: nc}
}

// LeaderGetSubject returns the JetStream API subject of a leader read from
// bucket, for permissions.
func LeaderGetSubject(bucket string) string {
	return "$JS.API.STREAM.MSG.GET.KV_" + bucket
}

type msgGetResponse struct {
	Message *struct {
		Sequence uint64 `json:"seq"`
		Header   []byte `json:"hdrs"`
		Data     []byte `json:"data"`
	} `json:"message"`
	Error *struct {
		Code        int    `json:"code"`
		ErrorCode   int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// errCodeNoMessage is JetStream's error code for "no message found".
const errCodeNoMessage = 10037

func (b *Bucket[T]) leaderGet(ctx context.Context, key string) (T, uint64, error) {
	var value T
	bucket := b.kv.Bucket()
	request, err := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	if err != nil {
		return value, 0, fmt.Errorf("kv: get from %s: %w", bucket, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}

	reply, err := b.leader.RequestWithContext(ctx, LeaderGetSubject(bucket), request)
	if err != nil {
		return value, 0, fmt.Errorf("kv: get from %s: %w", bucket, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return value, 0, fmt.Errorf("kv: get from %s: decode reply: %w", bucket, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == errCodeNoMessage {
			return value, 0, fmt.Errorf("%s/%s: %w", bucket, shortKey(key), ErrNotFound)
		}
		return value, 0, fmt.Errorf("kv: get from %s: %s (code %d)", bucket, resp.Error.Description, resp.Error.ErrorCode)
	}
	if resp.Message == nil {
		return value, 0, fmt.Errorf("kv: get from %s: empty reply", bucket)
	}
	// A delete or purge is stored as a message with this header and no data.
	if bytes.Contains(resp.Message.Header, []byte("KV-Operation: DEL")) || bytes.Contains(resp.Message.Header, []byte("KV-Operation: PURGE")) {
		return value, 0, fmt.Errorf("%s/%s: %w", bucket, shortKey(key), ErrNotFound)
	}

	if err := events.Decode(resp.Message.Data, &value); err != nil {
		return value, 0, err
	}
	return value, resp.Message.Sequence, nil
}
