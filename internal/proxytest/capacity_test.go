package proxytest_test

import (
	"context"
	"fmt"
	"net/http/httptrace"
	"sync"
	"testing"
	"time"
)

// waitingClients is how many clients wait at once through the proxy:
// each holds two of the proxy's connections (one from the client, one to
// a node), 4,000 in all, five times what Debian's default nginx.conf
// allows (worker_connections 768).
const waitingClients = 2000

// 2,000 clients, each on its own HTTP/1.1 connection, wait through the
// proxy at once; a message posted through it then (the post is not
// refused for want of connections) reaches every one of them. They come
// from 40 addresses, 50 from each, within the hub's limit per address,
// which the proxy's X-Forwarded-For lets it apply to each.
func TestWaitingClients(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		s, a, b := startChat(t, p, "-timeout", "30s")
		pub := s.client("", true)
		cursor := pub.join("crowd", "publisher")

		var mu sync.Mutex
		failures := map[string]int{}
		failed := func() int {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, k := range failures {
				n += k
			}
			return n
		}
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		// Clients arrive a few dozen at a time, as over any stretch of
		// real time: 2,000 TLS handshakes at once in one process under the
		// race detector take longer than the proxy waits for a request.
		arriving := make(chan struct{}, 64)
		for i := range waitingClients {
			c := s.client(fmt.Sprintf("127.0.1.%d", 1+i%40), false)
			arriving <- struct{}{}
			var arrived sync.Once
			sent := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { arrived.Do(func() { <-arriving }) },
			})
			wg.Go(func() {
				defer arrived.Do(func() { <-arriving })
				for since := cursor; ; {
					frames, next, err := c.poll(sent, "crowd", since)
					if err != nil {
						mu.Lock()
						failures[errorKind(err)]++
						mu.Unlock()
						return
					}
					if got := messages(frames); len(got) > 0 {
						if got[0] != "hello" {
							mu.Lock()
							failures[fmt.Sprintf("got %q", got)]++
							mu.Unlock()
						}
						return
					}
					since = next // it timed out: wait again
				}
			})
		}
		waitSuspended(t, waitingClients, failed, a, b)
		if err := pub.publish("crowd", "hello"); err != nil {
			t.Errorf("post with %d clients waiting: %v", waitingClients, err)
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Errorf("of %d clients waiting through %s: %v", waitingClients, p.name, failures)
		}
	})
}
