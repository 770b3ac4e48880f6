package main

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"unicode/utf8"

	"github.com/cometkit/cometkit/continuation"
)

// maxMessage bounds a published message; larger bodies get 413.
const maxMessage = 64 << 10

// messageAttr is the attribute a publish hands to each waiting subscriber.
const messageAttr = "longpoll.message"

// server is the classic Comet pair: GET /subscribe waits for the next
// message, POST /publish wakes every waiting subscriber with it. Messages
// published while a client is between two polls are not seen by that
// client; that is the classic protocol's known gap.
type server struct {
	mu      sync.Mutex
	waiting map[*continuation.Continuation]continuation.Handle
}

func newServer() *server {
	return &server{waiting: make(map[*continuation.Continuation]continuation.Handle)}
}

// routes returns the handler to put behind a continuation.Dispatcher.
// ServeMux answers other methods with 405 and an Allow header.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /subscribe", s.subscribe)
	mux.HandleFunc("POST /publish", s.publish)
	mux.HandleFunc("GET /publish", s.publish)
	return mux
}

func (s *server) subscribe(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		if err := c.Suspend(); err != nil {
			// Overloaded or shutting down: tell the client to come back.
			w.Header().Set("Retry-After", "1")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		c.AddListener(s) // forget the subscriber when it expires or leaves
		s.mu.Lock()
		s.waiting[c] = c.Handle()
		s.mu.Unlock()
		return
	}
	if msg, ok := c.Attribute(messageAttr).(string); ok && c.IsResumed() {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, msg)
		return
	}
	// Expired (or the server is shutting down): nothing new; poll again.
	w.WriteHeader(http.StatusNoContent)
}

// OnTimeout and OnComplete make server a continuation.Listener.
func (s *server) OnTimeout(c *continuation.Continuation)  { s.forget(c) }
func (s *server) OnComplete(c *continuation.Continuation) { s.forget(c) }

func (s *server) forget(c *continuation.Continuation) {
	s.mu.Lock()
	delete(s.waiting, c)
	s.mu.Unlock()
}

func (s *server) publish(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxMessage)
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	msg := r.Form.Get("message")
	switch {
	case msg == "":
		http.Error(w, "message is empty", http.StatusBadRequest)
		return
	case len(msg) > maxMessage:
		http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
		return
	case !utf8.ValidString(msg):
		http.Error(w, "message is not valid UTF-8", http.StatusBadRequest)
		return
	}
	s.broadcast(msg)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

// broadcast resumes every waiting subscriber with msg and returns how many
// it woke. A subscriber whose suspension ended meanwhile (it expired, or
// left) refuses the Resume, harmlessly.
func (s *server) broadcast(msg string) (woken int) {
	s.mu.Lock()
	waiting := s.waiting
	s.waiting = make(map[*continuation.Continuation]continuation.Handle, len(waiting))
	s.mu.Unlock()
	for c, h := range waiting {
		c.SetAttribute(messageAttr, msg)
		if h.Resume() == nil {
			woken++
		}
	}
	return woken
}

func (s *server) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}
