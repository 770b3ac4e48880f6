package clientmgr

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// NewInProcessBroker returns the broker of a single process, the default:
// each topic's sequence and history live in memory, and Publish delivers
// to the node in the same step, under the topic's lock, so Seq order is
// delivery order. A topic's history is dropped when the Manager reclaims
// the topic (Forgetter); its sequence then starts again under a new epoch,
// as after a restart.
func NewInProcessBroker() Broker { return &memoryBroker{seed: maphash.MakeSeed()} }

type memoryBroker struct {
	node    Node
	history int // messages kept per topic
	bytes   int // bytes of data kept per topic; 0: no bound
	seed    maphash.Seed
	shards  [defaultShards]memoryShard
}

type memoryShard struct {
	mu     sync.Mutex
	topics map[string]*memoryTopic
}

// memoryTopic is one topic's sequence and the ring of its newest messages.
type memoryTopic struct {
	epoch uint64
	first uint64    // Seq of the oldest message kept
	last  uint64    // Seq of the newest message; 0 before the first
	ring  []Message // the message of Seq s at (s-1) % size; grows up to size
	size  int       // messages kept at most
	bytes int       // data kept now
}

func (b *memoryBroker) Start(_ context.Context, n Node, cfg BrokerConfig) error {
	b.node, b.history, b.bytes = n, cfg.History, cfg.HistoryBytes
	for i := range b.shards {
		b.shards[i].topics = make(map[string]*memoryTopic)
	}
	return nil
}

func (b *memoryBroker) shard(topic string) *memoryShard {
	return &b.shards[maphash.String(b.seed, topic)%defaultShards]
}

// Publish ignores seen: this broker's memory is the whole truth.
func (b *memoryBroker) Publish(ctx context.Context, topic string, data []byte, _ Cursor) (Message, error) {
	if err := ctx.Err(); err != nil {
		return Message{}, err
	}
	s := b.shard(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[topic]
	if t == nil {
		t = &memoryTopic{epoch: NewEpoch(), size: b.history}
		s.topics[topic] = t
	}
	msg := Message{Topic: topic, Epoch: t.epoch, Seq: t.last + 1, Data: data, Time: time.Now()}
	t.append(msg, b.bytes)
	// Under the lock: the next Publish on the topic delivers after this one.
	_ = b.node.Deliver(msg) // it cannot go back: this sequence is the only one
	return msg, nil
}

// History ignores seen, as Publish does.
func (b *memoryBroker) History(ctx context.Context, topic string, after, _ Cursor) ([]Message, Cursor, error) {
	if err := ctx.Err(); err != nil {
		return nil, Cursor{}, err
	}
	s := b.shard(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[topic]
	if t == nil {
		return nil, Cursor{}, nil
	}
	from := after.Seq
	if (after.Epoch != 0 && after.Epoch != t.epoch) || after.Seq > t.last {
		from = 0
	}
	return t.since(from), Cursor{Epoch: t.epoch, Seq: t.last}, nil
}

func (b *memoryBroker) Head(ctx context.Context, topic string) (Cursor, error) {
	if err := ctx.Err(); err != nil {
		return Cursor{}, err
	}
	s := b.shard(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.topics[topic]; t != nil {
		return Cursor{Epoch: t.epoch, Seq: t.last}, nil
	}
	return Cursor{}, nil
}

func (b *memoryBroker) Forget(topic string) {
	s := b.shard(topic)
	s.mu.Lock()
	delete(s.topics, topic)
	s.mu.Unlock()
}

func (b *memoryBroker) Close() error { return nil }

// append keeps msg, and drops the oldest messages beyond the topic's
// count, and beyond maxBytes of data (0: no bound) while more than msg is
// kept.
func (t *memoryTopic) append(msg Message, maxBytes int) {
	if len(t.ring) < t.size {
		t.ring = append(t.ring, msg)
	} else {
		if t.last-t.first+1 == uint64(t.size) {
			t.drop() // its slot is msg's
		}
		t.ring[t.slot(msg.Seq)] = msg
	}
	if t.last == 0 {
		t.first = msg.Seq
	}
	t.last = msg.Seq
	t.bytes += len(msg.Data)
	for maxBytes > 0 && t.bytes > maxBytes && t.first < t.last {
		t.drop()
	}
}

// drop forgets the oldest message kept.
func (t *memoryTopic) drop() {
	s := t.slot(t.first)
	t.bytes -= len(t.ring[s].Data)
	t.ring[s] = Message{}
	t.first++
}

func (t *memoryTopic) slot(seq uint64) uint64 { return (seq - 1) % uint64(t.size) }

// since returns the kept messages after Seq after, oldest first.
func (t *memoryTopic) since(after uint64) []Message {
	from := max(after+1, t.first)
	if from > t.last {
		return nil
	}
	msgs := make([]Message, 0, t.last-from+1)
	for seq := from; seq <= t.last; seq++ {
		msgs = append(msgs, t.ring[t.slot(seq)])
	}
	return msgs
}
