// Package redisbroker lets several cometkit nodes share their topics
// through Redis, so that behind a load balancer they behave as one: a
// message published on any node reaches every subscriber on every node,
// once and in order, with the same per-topic Seq everywhere, and a client
// that re-polls another node with its cursor misses nothing.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
//	mgr := clientmgr.New(clientmgr.WithBroker(redisbroker.New(rdb)))
//	defer mgr.Close()
//
// or, from a URL, with the client owned by the broker:
//
//	b, err := redisbroker.Open("redis://127.0.0.1:6379/0")
//
// # How it works
//
// Publishing runs one Lua script, atomically: INCR the topic's sequence
// key to assign the Seq, XADD the message to the topic's stream with that
// Seq as its ID (trimmed to the history size), and PUBLISH it on one
// channel every node subscribes to. The stream is the history: Since and
// Register's cursor work on every node because a node that lacks part of a
// topic (it started later, or a client brings a cursor from a node that
// heard first) reads it from the stream before answering (clientmgr's
// SyncBroker).
//
// Pub/Sub is at most once: a node that sees a Seq jump repairs the gap
// from the stream before it delivers, so its subscribers get every message
// in order. When the connection drops, go-redis reconnects and subscribes
// again by itself; on each new subscription the broker reads, for every
// topic the node holds, what was published meanwhile. While Redis is
// unreachable, Broadcast fails within its context's deadline (or the
// publish timeout) with an error wrapping the cause, and suspended
// requests stay suspended.
//
// # Operating it
//
// Seq lives in Redis: keep Redis persistent (appendonly yes) if cursors
// must survive a Redis restart. Each topic's sequence carries an epoch (the
// time it started at 1); if Redis loses its data, the new sequence has a
// new epoch and every node drops its copy of the topic instead of taking
// the new Seqs for ones it has seen. Every node receives every message and keeps
// each topic's recent history in memory, as a single node does; the Redis
// keys of a topic are {prefix}:{topic}:seq, :log and :epoch. Give
// the client ContextTimeoutEnabled so that commands honour their
// context's deadline (Open does). Metrics (WithMetrics): errors by
// operation, reconnects, gaps repaired and messages recovered from the
// stream.
//
// # Goroutines
//
// Attach (called by clientmgr.New) starts one goroutine that receives the
// channel and delivers to the node; go-redis runs one more for the
// subscription. Close stops both and waits for them.
package redisbroker
