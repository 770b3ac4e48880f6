// Package redisbroker lets several cometkit nodes share their topics
// through Redis, so that behind a load balancer they behave as one: a
// message published on any node reaches the clients waiting on every
// node, in order, with the same epoch and Seq everywhere, and a client
// that polls another node with its cursor misses nothing, or is told that
// it may have (its [clientmgr.Batch] is not Complete).
//
//	b, err := redisbroker.Open("redis://127.0.0.1:6379/0")
//	if err != nil { ... a malformed URL ... }
//	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//	defer cancel()
//	mgr, err := clientmgr.Open(ctx, clientmgr.WithBroker(b)) // waits for Redis
//	if err != nil { ... Redis did not answer within 10 s ... }
//	defer mgr.Close() // closes b, and the client Open made
//
// or, on a client of your own (closed by you, after the Manager):
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true, MaxRetries: -1})
//	mgr, err := clientmgr.Open(ctx, clientmgr.WithBroker(redisbroker.New(rdb)))
//
// # How it works
//
// Redis owns each topic's sequence and history; the Managers only hold
// their waiting clients. Publish runs one Lua script, atomically: it
// decides the topic's epoch, INCRs the topic's Seq, XADDs the message to
// the topic's stream with the Seq as its ID (trimmed to about the history
// size, [clientmgr.WithHistory]), and PUBLISHes it on one channel that every
// node subscribes to. Each node's broker delivers what the channel brings
// to its Manager, in the channel's order, which is Seq order per topic;
// Publish does not deliver to its own node, the channel does. History and
// Head read the topic's epoch, Seq and stream atomically; History never
// makes up a message: a trimmed stream gives what it has, and the Manager
// tells the client when that does not reach back to its cursor.
//
// Pub/Sub is at most once. The Manager notices a delivery that does not
// follow the one before (a message the channel lost, a new epoch) and ends
// the waiting batches there; their clients' next registrations read what
// they lack from the stream. When the subscription's connection drops,
// go-redis reconnects and subscribes again by itself; on each new
// subscription the broker tells the Manager ([clientmgr.Node].Interrupted), whose
// waiting clients are answered and read what was published meanwhile. While
// Redis is unreachable, Broadcast fails within its context's deadline (or
// [WithPublishTimeout]) with an error wrapping the cause, and the waiting
// clients keep waiting.
//
// # Epochs, and Redis losing data
//
// Each topic's sequence has an epoch, kept in Redis beside it and carried
// by every message and cursor, so that a cursor is never taken at face
// value in another sequence. A topic starts a new epoch, at Seq 1 with an
// empty stream, when:
//
//   - Redis has no epoch for it: a new topic, or Redis lost its keys (a
//     restart without persistence, FLUSHALL, eviction);
//   - a node that has seen, in the current epoch, a Seq beyond Redis's
//     publishes or reads the history (Publish's and History's seen): Redis
//     lost its last writes (appendfsync everysec and a crash of the
//     machine), was restored from an older snapshot (RDB, the default
//     persistence) or failed over to a replica that lagged, and would hand
//     those Seqs out again;
//   - a node is given a message that goes back in its topic's sequence
//     within an epoch ([clientmgr.ErrSequenceRewound]): another node, one
//     that had not seen as much, published first after such a loss. The
//     node's broker starts the new epoch, unless another node already did.
//
// A new epoch started by a node that noticed a loss is announced on the
// channel, so every node wakes the clients waiting in the old one at once
// ([clientmgr.Node].EpochStarted). Clients whose cursors are of the old
// epoch then get what the new one has, with Complete false: the
// application can say "you may have missed messages". Messages Redis lost
// are gone; what matters is that no client is told it has them all.
//
// After Redis restarts, every node is subscribed again and wakes its
// waiting clients, whose next registrations read the history with the
// node's position: the first one on a node that saw more than Redis kept
// starts the new epoch. One window stays: a node that never saw the topic
// takes Redis's word, so if such a node publishes after a rollback before
// any node that saw more has read or been given anything of the topic, a
// client of the first node whose cursor is at or below the restored Seq
// receives that message as the continuation of its cursor; it is told at
// its next poll, once a node that saw more has started the new epoch (at
// the latest when that message reaches it).
//
// # Operating it
//
// Keep Redis persistent with the AOF (appendonly yes; appendfsync always
// loses nothing, everysec up to a second of writes): a restart then keeps
// every topic's epoch and Seq, and cursors stay valid. With snapshots only,
// a restart rolls back to the last snapshot and the topics written since
// start new epochs as above. Give every node the same WithHistory: each
// Publish trims the stream to the publisher's size, so a smaller one cuts
// the others' history short (their clients are told, not misled). Redis
// keeps the messages whatever their size; [clientmgr.WithHistoryBytes]
// bounds what one History read brings into the node (the newest messages
// within it).
//
// Epochs are times in nanoseconds from the publishing node's clock, made
// later than the topic's previous epoch when that clock is behind, so a
// topic's epoch never repeats while Redis keeps it; after Redis lost a
// topic's keys, its new epoch is also later than the one the publishing
// node saw. Clocks need not agree; they are never compared with each
// other.
//
// A topic's keys are {prefix}:{topic}:seq, :log (the stream) and :epoch
// ([WithPrefix]; default "cometkit"), with '%', '{' and '}' of the topic
// percent-encoded so that they share one hash tag: the package works on a
// Redis Cluster, where the channel, {prefix}:messages, reaches every
// shard's subscribers. Topics stay in Redis until deleted: about
// WithHistory messages each, and three keys. Give a client of your own
// ContextTimeoutEnabled, so that commands honour their context's deadline,
// and MaxRetries -1, so that a publish whose reply was lost is not stored
// twice; [Open] does both. Metrics ([WithMetrics], on the registry given and
// no other): errors by operation, resubscriptions, epochs started because
// Redis lost data, rewinds the node reported.
//
// # Goroutines
//
// [Broker.Start] (called by [clientmgr.Open]) starts one goroutine,
// which receives the channel and delivers to the node, and starts a new
// epoch when the node reports a rewind; go-redis runs two more for the
// subscription (its reader and its health check). Close, which the
// Manager's Close calls, ends the subscription, which stops all three,
// and waits for the broker's goroutine. The go-redis client has
// goroutines of its own, which end when it is closed: by Close for the
// client Open made, by you for yours.
//
// # Options
//
// An option's argument means what it says, and a default is what you get
// by not passing the option: a value that cannot be meant (an empty
// prefix, a duration of 0 or less, a nil registry or logger) makes New and
// Open panic, naming the option. Open returns the errors of its URL.
package redisbroker
