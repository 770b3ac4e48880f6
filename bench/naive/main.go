// Command naive is the baseline the benchmarks measure cometkit against: the
// long-poll server most people write first. Each waiting request blocks its
// net/http goroutine on its own channel, kept in one mutex-protected list;
// a publish hands the message to every channel in the list and empties it.
// There is no worker pool, no admission control and no history, so a
// message published while a client is between two polls never reaches it.
//
// It speaks the protocol of examples/longpoll with since= (the cursor is
// accepted and ignored), so that cmd/cometload drives both the same way:
//
//	GET  /subscribe?since=C  → {"messages":[the next message],"next":"N"}; no messages on timeout
//	POST /publish            (form field message) → "ok"
//
// It is kept here only as a baseline; do not use it as an example.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"sync"
	"time"
)

type message struct {
	Seq  uint64 `json:"seq"`
	Data string `json:"data"`
}

// batch is examples/longpoll's answer to a poll with a cursor, as far as
// cmd/cometload reads it.
type batch struct {
	Messages []message `json:"messages"`
	Next     string    `json:"next"`
}

type server struct {
	timeout time.Duration

	mu      sync.Mutex
	seq     uint64
	waiting []chan message
}

func (s *server) subscribe(w http.ResponseWriter, r *http.Request) {
	ch := make(chan message, 1)
	s.mu.Lock()
	s.waiting = append(s.waiting, ch)
	s.mu.Unlock()

	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	var msgs []message
	select {
	case m := <-ch:
		msgs = append(msgs, m)
	case <-timer.C:
	case <-r.Context().Done():
	}
	// A channel left in the list after a timeout or disconnect is buffered,
	// so the next publish does not block on it; the list is emptied then.
	w.Header().Set("Content-Type", "application/json")
	var next string
	if msgs == nil {
		msgs = []message{}
	} else {
		next = strconv.FormatUint(msgs[0].Seq, 10)
	}
	json.NewEncoder(w).Encode(batch{Messages: msgs, Next: next})
}

func (s *server) publish(w http.ResponseWriter, r *http.Request) {
	data := r.FormValue("message")
	s.mu.Lock()
	s.seq++
	m := message{Seq: s.seq, Data: data}
	waiting := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	for _, ch := range waiting {
		ch <- m
	}
	w.Write([]byte("ok"))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	timeout := flag.Duration("timeout", 25*time.Second, "how long a subscriber waits")
	flag.Parse()

	s := &server{timeout: *timeout}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /subscribe", s.subscribe)
	mux.HandleFunc("POST /publish", s.publish)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second, Protocols: &protocols}
	log.Fatal(srv.ListenAndServe())
}
