// Command loadserver serves a hub for cmd/cometload's hub modes (ws,
// hub-sse, hub-poll): the hub at /hub/, any client subscribing to any
// topic, and POST /publish (form field message, optional topic, default
// "load") broadcasting on the hub's Manager, over HTTP/1.1 and cleartext HTTP/2, as examples/longpoll's
// /publish does, so that cometload's publisher drives both alike. It
// serves with detaching (continuation.ListenAndServe), as the examples do;
// -attached serves with net/http alone, for comparison.
//
//	go run ./hub/internal/loadserver -addr 127.0.0.1:9370 &
//	go run ./cmd/cometload -target http://127.0.0.1:9370 -mode ws -n 1000 -pid $!
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/hub"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9370", "listen address")
	queue := flag.Int("queue", continuation.DefaultQueueSize, "new requests that may wait for a worker (the re-polls after a broadcast to all)")
	pollTimeout := flag.Duration("timeout", 60*time.Second, "how long a long-poll waits")
	attached := flag.Bool("attached", false, "serve with net/http alone: waiting long-polls and streams keep their goroutines")
	flag.Parse()

	mgr := clientmgr.New()
	defer mgr.Close()
	d := continuation.NewDispatcher(http.NotFoundHandler(), continuation.WithQueueSize(*queue))
	h := hub.New(mgr,
		hub.WithDispatcher(d),
		hub.WithPollTimeout(*pollTimeout),
		hub.WithMaxConnsPerAddr(1<<20), // the load comes from a handful of loopback addresses
	)
	mux := http.NewServeMux()
	mux.Handle("/hub/", h)
	mux.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		topic := r.FormValue("topic")
		if topic == "" {
			topic = "load"
		}
		if _, err := mgr.Broadcast(r.Context(), topic, []byte(r.FormValue("message"))); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	// HTTP/1.1, and HTTP/2 without TLS (cometload -h2c) for many streams
	// per connection.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Addr: *addr, Handler: mux, Protocols: &protocols}
	if *attached {
		log.Fatal(srv.ListenAndServe())
	}
	log.Fatal(continuation.ListenAndServe(srv))
}
