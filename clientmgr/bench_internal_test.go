package clientmgr

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
)

// BenchmarkParallelTopics broadcasts to 1,000 topics from 8 goroutines
// per CPU, with topics spread over the Manager's shards and over a single
// lock.
//
//	go test -run '^$' -bench ParallelTopics -cpu 2,8 ./clientmgr/
func BenchmarkParallelTopics(b *testing.B) {
	topics := make([]string, 1000)
	for i := range topics {
		topics[i] = "topic-" + strconv.Itoa(i)
	}
	for _, n := range []int{defaultShards, 1} {
		b.Run("shards="+strconv.Itoa(n), func(b *testing.B) {
			m := New(func(c *config) { c.shards = n })
			defer m.Close()
			data := []byte("hello")
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 1))
				for pb.Next() {
					topic := topics[r.IntN(len(topics))]
					if _, err := m.Broadcast(context.Background(), topic, data); err != nil {
						b.Error(err)
						return
					}
					m.Count(topic)
				}
			})
		})
	}
}
