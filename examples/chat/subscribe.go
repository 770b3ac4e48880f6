package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/sse"
)

// subscriptionAttr holds a subscriber's state across its dispatches.
const subscriptionAttr = "chat.subscription"

// A subscription is one subscriber: its room, its transport, and its
// session, if it has one, whose nick it keeps present.
type subscription struct {
	room    string
	sse     bool
	session *session
	cursor  clientmgr.Cursor // the cursor of its last registration
}

// A pollAnswer is a long-poll's answer: the events after the client's
// cursor, whether they follow it without a gap (false: the client may
// have missed some, because its cursor is from before a restart or older
// than the room's history), and the cursor to poll with next.
type pollAnswer struct {
	Events   []json.RawMessage `json:"events"`
	Complete bool              `json:"complete"`
	Next     clientmgr.Cursor  `json:"next"`
}

// subscribe serves both transports with the same continuation cycle:
// suspend, register on the room's topic from the client's cursor, and on
// the redispatch send what arrived. A long-poll then answers with a
// pollAnswer; an event stream writes the events, each with its cursor as
// its id (a "missed" event first when the client may have missed some),
// and suspends again on the same response, until the client goes or the
// server stops.
func (s *server) subscribe(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		s.startSubscription(w, r, c)
		return
	}
	sub := c.Attribute(subscriptionAttr).(*subscription)
	b := batchOf(c, sub)
	if sub.session != nil {
		// Still here: renew the nick's presence (errors only lose that).
		s.claim(r.Context(), sub.room, *sub.session)
	}
	if !sub.sse {
		writeJSON(w, pollAnswer{Events: raw(chatEvents(b.Messages)), Complete: b.Complete, Next: b.Next})
		return
	}
	if sse.Send(w, streamEvents(b)...) == nil {
		s.wait(w, r, c, sub, b.Next)
	}
}

// startSubscription checks the request and waits from the client's
// cursor. A room this server cannot hold (at -max-rooms) is refused with
// 503 and Retry-After before a stream starts, so that neither transport
// comes back at once: the page shows the error and backs off.
func (s *server) startSubscription(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
	sub := &subscription{room: chi.URLParam(r, "room")}
	switch t := r.URL.Query().Get("transport"); t {
	case "", "longpoll":
	case "sse":
		sub.sse = true
	default:
		http.Error(w, fmt.Sprintf("unknown transport %q: use longpoll or sse", t), http.StatusBadRequest)
		return
	}
	cursor := r.URL.Query().Get("since")
	if id := sse.LastEventID(r); sub.sse && id != "" {
		cursor = id // EventSource's own reconnect
	}
	after, err := clientmgr.ParseCursor(cursor)
	if err != nil {
		http.Error(w, "bad cursor: since and Last-Event-ID are a cursor the chat gave (or empty)", http.StatusBadRequest)
		return
	}
	ss, hasSession, err := s.signer.fromRequest(r)
	if err != nil {
		s.fail(w, err) // 401: the page joins again
		return
	}
	if err := s.rooms.enter(sub.room, time.Now()); err != nil {
		s.fail(w, err)
		return
	}
	if hasSession {
		if err := s.claim(r.Context(), sub.room, ss); err != nil {
			s.fail(w, err)
			return
		}
		sub.session = &ss
	}
	c.SetAttribute(subscriptionAttr, sub)
	c.SetTimeout(s.cfg.pollTimeout)
	if sub.sse && sse.Start(w, 2*time.Second) != nil {
		return
	}
	s.wait(w, r, c, sub, after)
}

// wait suspends the request and registers it from the cursor; anything
// already past the cursor resumes it at once. When waiting is refused
// (shutting down, overloaded) a poll is answered 503 with Retry-After and
// a stream ends (EventSource reconnects after its retry delay): never a
// resume that would answer at once and bring the client straight back.
func (s *server) wait(w http.ResponseWriter, r *http.Request, c *continuation.Continuation, sub *subscription, after clientmgr.Cursor) {
	sub.cursor = after
	err := c.Suspend()
	if err == nil {
		if err = s.mgr.RegisterCursor(r.Context(), topicOf(sub.room), after, c); err != nil {
			defer c.Complete() // what is written below is the response
		}
	}
	if err != nil && !sub.sse {
		if !errors.Is(err, clientmgr.ErrTooManyTopics) {
			err = errBusy
		}
		s.fail(w, err)
	}
}

// batchOf is the batch of the continuation's registration on its room.
func batchOf(c *continuation.Continuation, sub *subscription) clientmgr.Batch {
	if bs := clientmgr.Batches(c); len(bs) > 0 {
		return bs[0]
	}
	return clientmgr.Batch{Complete: true, Next: sub.cursor}
}

func raw(evs []stored) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = ev.data
	}
	return out
}

// streamEvents are a batch's server-sent events: "missed", carrying the
// cursor to go on from, when the batch is incomplete, then one event per
// chat event, named by its type, with its cursor as its id.
func streamEvents(b clientmgr.Batch) []sse.Event {
	var out []sse.Event
	if !b.Complete {
		missed := sse.Event{Type: "missed", Data: []byte(b.Next.String())}
		if len(b.Messages) == 0 {
			missed.ID = b.Next.String() // a reconnect goes on from there
		}
		out = append(out, missed)
	}
	for _, ev := range chatEvents(b.Messages) {
		out = append(out, sse.Event{ID: ev.cursor.String(), Type: ev.typ, Data: ev.data})
	}
	return out
}
