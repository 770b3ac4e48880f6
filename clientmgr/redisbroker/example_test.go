package redisbroker_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
)

// Two Managers on one Redis, as two nodes would be: a message broadcast on
// one is in the history of the other, under the same epoch and Seq.
// (Compiled, not run: it needs a Redis on 127.0.0.1:6379; the package's
// tests start their own.)
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node := func() *clientmgr.Manager {
		b, err := redisbroker.Open("redis://127.0.0.1:6379/0")
		if err != nil {
			log.Fatal(err) // a malformed URL
		}
		// Waits for Redis, within ctx; Close closes b and b's client.
		m, err := clientmgr.Open(ctx, clientmgr.WithBroker(b))
		if err != nil {
			log.Fatal(err) // Redis did not answer within 10 s
		}
		return m
	}
	a, b := node(), node()
	defer a.Close()
	defer b.Close()

	msg, err := a.Broadcast(ctx, "room:lobby", []byte("hello"))
	if err != nil {
		log.Fatal(err) // Redis unreachable: answer 503 with Retry-After
	}
	// A client that saw nothing yet polls node b, from the start.
	batch, err := b.History(ctx, "room:lobby", clientmgr.Cursor{})
	if err != nil {
		log.Fatal(err)
	}
	last := batch.Messages[len(batch.Messages)-1]
	fmt.Println(last.Cursor() == msg.Cursor(), string(last.Data))
}
