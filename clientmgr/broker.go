package clientmgr

import (
	"context"
	"errors"
)

// A Broker owns every topic's sequence and history, and carries each
// published message to every node (Manager) that shares the topics. The
// Manager only holds the clients waiting on this node: it publishes
// through the broker, asks it for history, and hands what the broker
// delivers to its clients. Nothing flows back but the node's verdict on a
// delivery.
//
// The default broker (NewInProcessBroker) serves one process; package
// redisbroker shares topics between processes through Redis.
//
// A Broadcast goes one way: Manager.Broadcast → Broker.Publish, which
// assigns the message its Epoch and Seq and keeps it in the topic's
// history → Node.Deliver on every node, in Seq order per topic → the
// clients registered there are resumed.
type Broker interface {
	// Start binds the broker to the node it delivers to and starts it
	// (connects, subscribes), within ctx. The Manager calls it once, from
	// Open or New, before any other method; if it fails, the Manager
	// closes the broker.
	Start(ctx context.Context, n Node, cfg BrokerConfig) error

	// Publish appends data to topic: the broker gives it the topic's next
	// Seq (and a new epoch when the sequence starts), keeps it in the
	// topic's history and delivers it to every node. seen is where the
	// topic stands on the publishing node (the zero Cursor if it does not
	// know): a broker whose engine can lose acknowledged messages uses it
	// to notice that it did (an engine behind seen, in seen's epoch, has
	// lost data) and starts a new epoch rather than hand out Seqs the
	// nodes have seen. It returns the message as stored.
	Publish(ctx context.Context, topic string, data []byte, seen Cursor) (Message, error)

	// History returns the topic's messages after the cursor, oldest first
	// and without gaps, as far back as the history reaches, when after is
	// a position of the topic's current epoch (or has no epoch);
	// otherwise, or when after is beyond the topic's newest message, every
	// message it keeps. It also returns the topic's head: the position of
	// its newest message (its epoch with Seq 0 when the sequence has
	// started but kept nothing; the zero Cursor when the topic has no
	// sequence). The Manager decides from these whether the cursor was
	// honoured. seen is where the topic stands on the asking node, as in
	// Publish: an engine behind it in its epoch has lost data, and the
	// broker starts a new epoch before it answers, so that the client's
	// cursor is not taken at face value in a sequence that went back.
	History(ctx context.Context, topic string, after, seen Cursor) (msgs []Message, head Cursor, err error)

	// Head returns the position of the topic's newest message, as History
	// does, without the messages.
	Head(ctx context.Context, topic string) (Cursor, error)

	// Close stops the broker and releases what it holds; the Manager's
	// Close calls it.
	Close() error
}

// BrokerConfig is what a Manager tells its broker at Start.
type BrokerConfig struct {
	// History is how many messages each topic keeps (WithHistory), at
	// least.
	History int
	// HistoryBytes bounds the data a topic keeps in this process's memory
	// (WithHistoryBytes); 0 means no bound beyond History. A broker whose
	// history lives elsewhere may ignore it.
	HistoryBytes int
}

// A Node is what a broker sees of the Manager it serves.
type Node interface {
	// Deliver hands the node a message published on any node. A broker
	// delivers each message once, and a topic's messages in the order of
	// their sequence. The node checks that order itself: a message that
	// does not follow the one before it (a Seq skipped, a new epoch) ends
	// the batches of the clients waiting for the topic, whose next
	// registration fetches what they lack from History. Deliver returns
	// ErrSequenceRewound when msg goes back in its topic's sequence within
	// one epoch: the engine has lost messages it had acknowledged
	// (restored from an older snapshot, a failover to a lagging replica),
	// and the broker must start a new epoch for the topic so that no
	// cursor of the broken one is taken at face value.
	Deliver(msg Message) error

	// EpochStarted tells the node that the topic's sequence started again
	// under epoch before any message of it was published (the broker
	// found that its engine had lost data): the clients waiting for the
	// topic are resumed, and their next registration learns of the new
	// epoch from History. A broker calls it in order with Deliver.
	EpochStarted(topic string, epoch uint64)

	// Interrupted tells the node that some messages may not have reached
	// it (the broker lost its connection to its engine and has it back):
	// every client waiting on the node is resumed and fetches what it
	// lacks from History on its next registration.
	Interrupted()
}

// ErrSequenceRewound is what Node.Deliver returns for a message that goes
// back in its topic's sequence within one epoch.
var ErrSequenceRewound = errors.New("clientmgr: a topic's sequence went back within its epoch")

// A Forgetter is a Broker that keeps per-topic state for its node in
// memory; the Manager calls Forget when it reclaims a topic that has had
// no subscriber and no message for WithIdleTimeout. The in-process broker
// drops the topic's history then; the topic starts again under a new epoch
// when something is published on it.
type Forgetter interface {
	Forget(topic string)
}
