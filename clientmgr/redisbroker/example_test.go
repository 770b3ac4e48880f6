package redisbroker_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
)

// Two Managers on one Redis, as two nodes would be: a message broadcast on
// one has the same Seq on both. (Compiled, not run: it needs a Redis on
// 127.0.0.1:6379; the package's tests start their own.)
func ExampleOpen() {
	node := func() *clientmgr.Manager {
		b, err := redisbroker.Open("redis://127.0.0.1:6379/0")
		if err != nil {
			log.Fatal(err)
		}
		return clientmgr.New(clientmgr.WithBroker(b)) // its Close closes b and b's client
	}
	a, b := node(), node()
	defer a.Close()
	defer b.Close()

	msg, err := a.Broadcast(context.Background(), "room:lobby", []byte("hello"))
	if err != nil {
		log.Fatal(err) // Redis unreachable: answer 503 with Retry-After
	}
	fmt.Println(msg.Seq == b.LastSeq("room:lobby"))
}
