package clientmgr

import (
	"context"
	"sync"
	"time"
)

// A Broker carries published messages between the nodes (Managers) that
// share topics, and assigns their sequence numbers, so that Seq stays per
// topic across nodes. The Manager publishes through it and delivers what
// it hands back, on every node, to that node's own subscribers.
//
// The default, NewInProcessBroker, serves one node. A multi-node broker
// (Redis) assigns Seq in the shared engine and calls Node.Deliver on every
// node, in Seq order per topic, repairing gaps before it delivers.
type Broker interface {
	// Attach binds the broker to the node it serves; New calls it once,
	// before any Publish.
	Attach(n Node) error
	// Publish assigns the next Seq of topic, makes the message part of the
	// topic's history and delivers it to every node, this one included;
	// it returns the message as delivered. It honours ctx's deadline.
	Publish(ctx context.Context, topic string, data []byte) (Message, error)
	// Close stops the broker; Manager.Close calls it.
	Close() error
}

// A Node is what a Broker sees of a Manager.
type Node interface {
	// Deliver hands the node a message published anywhere. Messages of a
	// topic must arrive in Seq order; one with a Seq the node already has
	// is ignored.
	Deliver(msg Message)
	// Append assigns msg the topic's next Seq from the node's own history
	// and delivers it: the whole of publishing for a single node.
	Append(topic string, data []byte, at time.Time) (Message, error)
	// LastSeq returns the last Seq of the topic the node has (0 if none),
	// for a broker to see what it is missing.
	LastSeq(topic string) uint64
	// Topics returns the names of the topics the node holds, for a broker
	// to catch up on after it lost its connection.
	Topics() []string
	// Reset empties the node's history of topic, keeping its subscribers:
	// the engine started the topic's Seq again from 1 (it lost its data),
	// and the messages of the new sequence must not be taken for ones
	// the node already has.
	Reset(topic string)
}

// A SyncBroker is a Broker whose engine keeps each topic's history for
// every node. A node's own copy of a topic can be behind the engine: it
// has not seen the topic yet (it started after the messages were
// published), or a client re-polls it with a cursor it got from a node
// that heard of the message first. Before answering such a cursor (in
// Register, Since and LastSeq) the Manager calls Sync, which must bring the
// node's copy up to date through Node.Deliver, within ctx.
type SyncBroker interface {
	Broker
	Sync(ctx context.Context, topic string) error
}

// syncTimeout bounds the wait for a SyncBroker in Register, Since and
// LastSeq: past it, the node answers from what it has.
const syncTimeout = time.Second

// NewInProcessBroker returns the single-node broker: Publish appends to the
// Manager's own topic history, under the topic's lock, so Seq is assigned
// and the message delivered in one step.
func NewInProcessBroker() Broker { return &inProcessBroker{} }

type inProcessBroker struct {
	mu   sync.Mutex
	node Node
}

func (b *inProcessBroker) Attach(n Node) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.node = n
	return nil
}

func (b *inProcessBroker) Publish(ctx context.Context, topic string, data []byte) (Message, error) {
	if err := ctx.Err(); err != nil {
		return Message{}, err
	}
	b.mu.Lock()
	n := b.node
	b.mu.Unlock()
	return n.Append(topic, data, time.Now())
}

func (b *inProcessBroker) Close() error { return nil }
