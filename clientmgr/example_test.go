package clientmgr_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

// Unicast to thousands of clients subscribed to topics of interest: each
// client registers, in one suspension, on its own topic ("user:ID") and on
// the topics it follows. A Broadcast on "user:ID" reaches that client
// alone; one on a shared topic reaches everyone following it.
func Example_unicast() {
	mgr := clientmgr.New()
	defer mgr.Close()

	var registered sync.WaitGroup
	poll := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if !c.IsInitial() {
			for _, m := range clientmgr.Messages(c) {
				fmt.Fprintf(w, "%s: %s", m.Topic, m.Data)
			}
			return
		}
		if err := c.Suspend(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer registered.Done()
		user := r.URL.Query().Get("user")
		topics := append([]string{"user:" + user}, strings.Split(r.URL.Query().Get("follows"), ",")...)
		for _, topic := range topics {
			// Only what comes next: register where the topic stands now.
			head, err := mgr.Head(r.Context(), topic)
			if err == nil {
				err = mgr.RegisterCursor(r.Context(), topic, head, c)
			}
			if err != nil {
				c.Resume() // answer now rather than wait for nothing
				return
			}
		}
	}))

	const clients = 2000
	answers := make([]string, clients)
	answered := make([]chan struct{}, clients)
	var done sync.WaitGroup
	registered.Add(clients)
	for i := range clients {
		answered[i] = make(chan struct{})
		done.Go(func() {
			defer close(answered[i])
			rec := httptest.NewRecorder()
			follows := "weather"
			if i%2 == 0 {
				follows = "sports"
			}
			poll.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, fmt.Sprintf("/?user=%d&follows=%s", i, follows), nil))
			answers[i] = rec.Body.String()
		})
	}
	registered.Wait()

	ctx := context.Background()
	mgr.Broadcast(ctx, "user:7", []byte("a direct message"))
	<-answered[7]
	fmt.Println("following sports:", mgr.Count("sports"))
	mgr.Broadcast(ctx, "sports", []byte("goal!"))
	mgr.Broadcast(ctx, "weather", []byte("rain"))
	done.Wait()

	fmt.Println("client 7:", answers[7])
	fmt.Println("client 8:", answers[8])
	fmt.Println("client 9:", answers[9])
	// Output:
	// following sports: 1000
	// client 7: user:7: a direct message
	// client 8: sports: goal!
	// client 9: weather: rain
}
