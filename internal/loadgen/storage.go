package loadgen

import (
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// KV reads and writes are messages on these subjects, and a plain
// subscriber receives a copy of each. A read is a direct get request (buckets
// allow direct gets by default) or, for clients that do not use direct
// gets, a stream message get request. A write is a publish to the key's
// subject.
const (
	directGetSubjects  = "$JS.API.DIRECT.GET.>"
	messageGetSubjects = "$JS.API.STREAM.MSG.GET.>"
	writeSubjects      = "$KV.>"
)

// StorageOps counts KV reads and writes by bucket.
type StorageOps struct {
	Reads  map[string]int
	Writes map[string]int
}

// storageCounter counts KV operations seen on a NATS connection of its own.
type storageCounter struct {
	nc *nats.Conn

	mu     sync.Mutex
	reads  map[string]int
	writes map[string]int
}

func startStorageCounter(natsURL string) (*storageCounter, error) {
	nc, err := nats.Connect(natsURL, nats.Name("loadgen storage counter"))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
	}
	c := &storageCounter{nc: nc, reads: map[string]int{}, writes: map[string]int{}}

	for _, sub := range []struct {
		subject string
		handle  nats.MsgHandler
	}{
		{directGetSubjects, func(m *nats.Msg) { c.add(c.reads, readBucket(m.Subject, "$JS.API.DIRECT.GET.")) }},
		{messageGetSubjects, func(m *nats.Msg) { c.add(c.reads, readBucket(m.Subject, "$JS.API.STREAM.MSG.GET.")) }},
		{writeSubjects, func(m *nats.Msg) { c.add(c.writes, writeBucket(m.Subject)) }},
	} {
		s, err := nc.Subscribe(sub.subject, sub.handle)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", sub.subject, err)
		}
		// A burst of writes must be counted, not dropped as a slow consumer.
		_ = s.SetPendingLimits(-1, -1)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("flush subscriptions: %w", err)
	}
	return c, nil
}

func (c *storageCounter) add(m map[string]int, bucket string) {
	if bucket == "" {
		return
	}
	c.mu.Lock()
	m[bucket]++
	c.mu.Unlock()
}

// snapshot returns the counts so far. It flushes first, so every operation
// the server handled before the call has been counted.
func (c *storageCounter) snapshot() StorageOps {
	_ = c.nc.Flush()
	c.mu.Lock()
	defer c.mu.Unlock()
	return StorageOps{Reads: clone(c.reads), Writes: clone(c.writes)}
}

func (c *storageCounter) close() { c.nc.Close() }

// readBucket returns the bucket a read request addresses: the stream token
// after prefix, KV_<bucket>. Reads of streams that are not buckets return "".
func readBucket(subject, prefix string) string {
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return ""
	}
	stream, _, _ := strings.Cut(rest, ".")
	bucket, ok := strings.CutPrefix(stream, "KV_")
	if !ok {
		return ""
	}
	return bucket
}

// writeBucket returns the bucket of a write subject, $KV.<bucket>.<key>.
func writeBucket(subject string) string {
	rest, ok := strings.CutPrefix(subject, "$KV.")
	if !ok {
		return ""
	}
	bucket, _, _ := strings.Cut(rest, ".")
	return bucket
}

// diff returns the operations counted between two snapshots.
func (later StorageOps) diff(earlier StorageOps) StorageOps {
	sub := func(a, b map[string]int) map[string]int {
		out := map[string]int{}
		for k, v := range a {
			if d := v - b[k]; d != 0 {
				out[k] = d
			}
		}
		return out
	}
	return StorageOps{Reads: sub(later.Reads, earlier.Reads), Writes: sub(later.Writes, earlier.Writes)}
}
