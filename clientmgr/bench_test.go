package clientmgr_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkBroadcast10k is one Broadcast to 10,000 registered requests,
// timed until every one of them has been redispatched and answered.
//
//	go test -run '^$' -bench Broadcast10k -benchmem ./clientmgr/
func BenchmarkBroadcast10k(b *testing.B) {
	const n = 10_000
	m := clientmgr.New()
	defer m.Close()
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
		head, err := m.Head(r.Context(), "room")
		if err == nil {
			err = m.RegisterCursor(r.Context(), "room", head, c)
		}
		if err != nil {
			b.Error(err)
		}
		registered <- struct{}{}
	}), continuation.WithDefaultTimeout(0), continuation.WithQueueSize(n)) // all 10,000 arrive at once
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	data := []byte("hello")
	for b.Loop() {
		b.StopTimer()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { d.ServeHTTP(&discardWriter{h: http.Header{}}, req) })
		}
		for range n {
			<-registered
		}
		b.StartTimer()
		if _, err := m.Broadcast(context.Background(), "room", data); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/delivery")
}

// BenchmarkRegisterCycle is one request's streaming cycle: suspend,
// register, resume, redispatch (which ends the registration), against the
// same cycle without the Manager.
//
//	go test -run '^$' -bench RegisterCycle -benchmem ./clientmgr/
func BenchmarkRegisterCycle(b *testing.B) {
	for _, withManager := range []bool{false, true} {
		name := "dispatch-only"
		if withManager {
			name = "register+unregister"
		}
		b.Run(name, func(b *testing.B) {
			m := clientmgr.New()
			defer m.Close()
			cycles := b.N
			d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c := continuation.FromRequest(r)
				n, _ := c.Attribute("n").(int)
				if n == cycles {
					return
				}
				c.SetAttribute("n", n+1)
				c.Suspend()
				if withManager {
					m.Register("room", 0, c)
				}
				c.Resume()
			}))
			b.ResetTimer()
			d.ServeHTTP(&discardWriter{h: http.Header{}}, httptest.NewRequest(http.MethodGet, "/", nil))
		})
	}
}
