package redisbroker_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/internal/fanoutbench"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/internal/testredis"
)

// The brokers the benchmarks compare: one node in process; and two nodes
// on one Redis (publishing on one, subscribers on the same or the other).
type setup struct {
	name      string
	publisher *clientmgr.Manager
	receiver  *clientmgr.Manager
}

func setups(b *testing.B) []setup {
	// Persistent as in production, but fsync once a second, not on every
	// write (which costs about 1 ms a write on these machines' disks).
	r := testredis.Start(b, "--appendfsync", "everysec")
	inProcess := clientmgr.New()
	b.Cleanup(func() { inProcess.Close() })
	redisNode := func() *clientmgr.Manager {
		rdb := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
		m, err := clientmgr.Open(b.Context(), clientmgr.WithBroker(redisbroker.New(rdb, redisbroker.WithLogger(quiet))))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close(); rdb.Close() })
		return m
	}
	a, c := redisNode(), redisNode()
	return []setup{{"in-process", inProcess, inProcess}, {"redis-same-node", a, a}, {"redis-cross-node", a, c}}
}

// BenchmarkFanout is one Broadcast to 1,000 waiting requests, timed until
// all of them are answered: the fan-out latency, in process against
// through Redis to the same node and to another node. The requests
// register at the topic's head, as a client that wants what comes next.
//
//	go test -run '^$' -bench Fanout ./clientmgr/redisbroker/
func BenchmarkFanout(b *testing.B) {
	for _, s := range setups(b) {
		b.Run(s.name, func(b *testing.B) { fanoutbench.Run(b, s.publisher, s.receiver, 1000) })
	}
}

// BenchmarkPublish is Broadcast with no one waiting, from many goroutines at
// once (8 per CPU): the publishing throughput of each broker.
//
//	go test -run '^$' -bench Publish ./clientmgr/redisbroker/
func BenchmarkPublish(b *testing.B) {
	for _, s := range setups(b) {
		if s.name == "redis-cross-node" {
			continue // the same as redis-same-node for the publisher
		}
		b.Run(s.name, func(b *testing.B) {
			b.SetParallelism(8) // × GOMAXPROCS publishers
			data := []byte("hello")
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.publisher.Broadcast(context.Background(), "publish", data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
