package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/internal/respond"
	"github.com/cometkit/cometkit/servlet"
	"github.com/cometkit/cometkit/sse"
)

// topic is the one channel this example publishes on.
const topic = "messages"

// maxMessage bounds a published message; larger ones get 413.
const maxMessage = 64 << 10

// classicAttr marks a subscriber of the classic protocol, which wants only
// the next message, as text.
const classicAttr = "longpoll.classic"

// newContainer maps the three servlets and starts the container. Answers
// to subscribers are written within writeTimeout.
func newContainer(mgr *clientmgr.Manager, writeTimeout time.Duration, opts ...continuation.Option) (*servlet.Container, error) {
	c := servlet.NewContainer(opts...)
	c.Handle("/subscribe", &subscribe{mgr: mgr, writeTimeout: writeTimeout})
	c.Handle("/events", &events{mgr: mgr})
	c.Handle("/publish", &publish{mgr: mgr})
	return c, c.Start()
}

// subscribe waits for messages. Without ?since= it keeps the classic
// protocol: the body is the next message published, as text/plain, and a
// message published while the client is between two polls is not seen.
// With ?since=CURSOR (the next of the previous answer; "" or 0 the first
// time) the body is the JSON of a clientmgr.Batch: every message after the
// cursor, taken atomically from the topic's history at registration, the
// cursor to poll with next, and complete=false when messages may have been
// missed (a cursor from before a restart, or older than the history).
type subscribe struct {
	mgr          *clientmgr.Manager
	writeTimeout time.Duration // a batch can be a whole history: a client that does not read it holds a worker until then
}

func (s *subscribe) DoGet(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		s.wait(w, r, c)
		return
	}
	b := clientmgr.Batches(c)[0]
	if c.Attribute(classicAttr) == nil {
		body, _ := json.Marshal(b) // a Batch always marshals
		respond.Bounded(w, http.StatusOK, "application/json", body, s.writeTimeout)
		return
	}
	if len(b.Messages) == 0 { // expired: nothing new, poll again
		w.WriteHeader(http.StatusNoContent)
		return
	}
	respond.Bounded(w, http.StatusOK, "text/plain; charset=utf-8", b.Messages[0].Data, s.writeTimeout)
}

func (s *subscribe) wait(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
	var after clientmgr.Cursor
	var err error
	if q := r.URL.Query(); q.Has("since") {
		after, err = clientmgr.ParseCursor(q.Get("since"))
	} else {
		c.SetAttribute(classicAttr, true)
		after, err = s.mgr.Head(r.Context(), topic) // only what comes next
	}
	if err != nil {
		http.Error(w, "bad cursor: since is the next of the previous answer (or empty)", http.StatusBadRequest)
		return
	}
	register(w, r, c, s.mgr, after)
}

// register suspends the request and registers it from the cursor; a
// refusal is answered now with 503 and Retry-After.
func register(w http.ResponseWriter, r *http.Request, c *continuation.Continuation, mgr *clientmgr.Manager, after clientmgr.Cursor) {
	err := c.Suspend()
	if err == nil {
		if err = mgr.RegisterCursor(r.Context(), topic, after, c); err != nil {
			defer c.Complete() // the answer below is the response
		}
	}
	if err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "cannot wait now: "+err.Error(), http.StatusServiceUnavailable)
	}
}

// events streams the topic as server-sent events: one response, many
// suspend cycles. Each message is an event whose id is its cursor, so a
// client that reconnects with Last-Event-ID (or ?since=CURSOR) misses
// nothing, or gets a "missed" event first when its cursor cannot be
// honoured; a timeout writes a keep-alive comment and waits again.
type events struct{ mgr *clientmgr.Manager }

func (e *events) DoGet(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		after, err := e.cursor(r)
		if err != nil {
			http.Error(w, "bad cursor: since and Last-Event-ID are an event id (or empty)", http.StatusBadRequest)
			return
		}
		if sse.Start(w, time.Second) == nil {
			e.wait(w, r, c, after)
		}
		return
	}
	b := clientmgr.Batches(c)[0]
	if sse.Send(w, streamEvents(b)...) == nil {
		e.wait(w, r, c, b.Next)
	}
}

// cursor is where a stream starts: the Last-Event-ID of a reconnecting
// EventSource, else ?since=, else what comes next.
func (e *events) cursor(r *http.Request) (clientmgr.Cursor, error) {
	if id := sse.LastEventID(r); id != "" {
		return clientmgr.ParseCursor(id)
	}
	if q := r.URL.Query(); q.Has("since") {
		return clientmgr.ParseCursor(q.Get("since"))
	}
	return e.mgr.Head(r.Context(), topic)
}

// wait suspends the stream until the next message after the cursor. When
// waiting is refused (shutting down, or full) the stream ends and the
// client reconnects with its Last-Event-ID.
func (e *events) wait(w http.ResponseWriter, r *http.Request, c *continuation.Continuation, after clientmgr.Cursor) {
	if c.Suspend() != nil {
		return
	}
	if e.mgr.RegisterCursor(r.Context(), topic, after, c) != nil {
		c.Complete()
	}
}

// streamEvents are a batch's events: "missed", carrying the cursor to go on
// from, when the batch is incomplete, then one "message" per message.
func streamEvents(b clientmgr.Batch) []sse.Event {
	var evs []sse.Event
	if !b.Complete {
		evs = append(evs, sse.Event{Type: "missed", Data: []byte(b.Next.String())})
		if len(b.Messages) == 0 {
			evs[0].ID = b.Next.String() // a reconnect goes on from there
		}
	}
	for _, m := range b.Messages {
		evs = append(evs, sse.Event{ID: m.Cursor().String(), Type: "message", Data: m.Data})
	}
	return evs
}

// publish broadcasts the form field message to every subscriber. It takes
// POST only: a GET that changes state can be triggered from any page
// (an <img src>), across origins.
type publish struct{ mgr *clientmgr.Manager }

func (p *publish) DoPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxMessage)
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	msg := r.PostForm.Get("message")
	switch {
	case msg == "":
		http.Error(w, "message is empty", http.StatusBadRequest)
		return
	case !utf8.ValidString(msg):
		http.Error(w, "message is not valid UTF-8", http.StatusBadRequest)
		return
	}
	_, err := p.mgr.Broadcast(r.Context(), topic, []byte(msg))
	switch {
	case errors.Is(err, clientmgr.ErrMessageTooLarge):
		http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "cannot publish: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}
