// Package fanoutbench is the benchmark of one Broadcast to many waiting
// requests, timed until every one of them is answered. clientmgr's
// BenchmarkBroadcast10k and redisbroker's BenchmarkFanout both run it, so
// that the in-process figures and those through Redis measure the same
// thing.
package fanoutbench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

// Run runs b: each round, n requests register on receiver at the head of a
// topic, as clients that want what comes next, and one Broadcast on
// publisher answers them all. Only the Broadcast and the answers are
// timed. Besides ns/op, Run reports ns/delivery.
func Run(b *testing.B, publisher, receiver *clientmgr.Manager, n int) {
	const topic = "fanout"
	var head clientmgr.Cursor // set before each round's requests start
	registered := make(chan struct{}, n)
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if !c.IsInitial() {
			for _, msg := range clientmgr.Messages(c) {
				w.Write(msg.Data)
			}
			return
		}
		c.Suspend()
		if err := receiver.RegisterCursor(r.Context(), topic, head, c); err != nil {
			b.Error(err)
		}
		registered <- struct{}{}
	}), continuation.WithDefaultTimeout(0), continuation.WithQueueSize(n)) // all n arrive at once
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	data := []byte("hello")
	for b.Loop() {
		b.StopTimer()
		var err error
		if head, err = receiver.Head(context.Background(), topic); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { d.ServeHTTP(NewDiscard(), req) })
		}
		for range n {
			<-registered
		}
		b.StartTimer()
		if _, err := publisher.Broadcast(context.Background(), topic, data); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
}

// A Discard is a ResponseWriter that keeps nothing, so that a benchmark
// served in process measures the Manager and not a recorder.
type Discard struct{ header http.Header }

// NewDiscard returns a Discard with its header map made, so that making it
// costs nothing while the request is served.
func NewDiscard() *Discard { return &Discard{header: http.Header{}} }

func (w *Discard) Header() http.Header         { return w.header }
func (w *Discard) Write(p []byte) (int, error) { return len(p), nil }
func (w *Discard) WriteHeader(int)             {}
