package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

// subscriptionAttr holds a subscriber's state across its dispatches.
const subscriptionAttr = "chat.subscription"

// subscription is one subscriber: its transport, its cursor (the last Seq
// it has been sent) and, if it said, its nick, to keep it present.
type subscription struct {
	topic  string
	room   string
	sse    bool
	cursor uint64
	nick   string
}

// subscribe serves both transports with the same continuation cycle:
// suspend, register on the room's topic from the cursor, and on the
// redispatch send what arrived. A long-poll then answers (a JSON array,
// [] on timeout); an event stream writes the events, flushes, and suspends
// again on the same response, until the client goes or the server stops.
func (s *server) subscribe(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		sub, err := s.newSubscription(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.SetAttribute(subscriptionAttr, sub)
		c.SetTimeout(s.cfg.pollTimeout)
		if sub.sse {
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
			fmt.Fprintf(w, "retry: 2000\n: connected\n\n")
			http.NewResponseController(w).Flush()
		}
		s.wait(w, c, sub)
		return
	}

	sub := c.Attribute(subscriptionAttr).(*subscription)
	msgs := clientmgr.Messages(c)
	if len(msgs) > 0 && msgs[0].Seq > sub.cursor+1 {
		// The batch overflowed (a slow client): take it from the history.
		msgs, _ = s.mgr.Since(sub.topic, sub.cursor)
	}
	if len(msgs) > 0 {
		sub.cursor = msgs[len(msgs)-1].Seq
	}
	if sub.nick != "" {
		s.present.touch(sub.room, sub.nick, time.Now())
	}
	if !sub.sse {
		writeJSON(w, events(msgs))
		return
	}
	if err := writeEvents(w, events(msgs)); err != nil {
		return // the client is gone
	}
	s.wait(w, c, sub)
}

func (s *server) newSubscription(r *http.Request) (*subscription, error) {
	q := r.URL.Query()
	room := chi.URLParam(r, "room")
	sub := &subscription{topic: topicOf(room), room: room}
	switch q.Get("transport") {
	case "", "longpoll":
	case "sse":
		sub.sse = true
	default:
		return nil, fmt.Errorf("unknown transport %q: use longpoll or sse", q.Get("transport"))
	}
	cursor := q.Get("since")
	if id := r.Header.Get("Last-Event-ID"); sub.sse && id != "" {
		cursor = id // EventSource's own reconnect
	}
	var err error
	if sub.cursor, err = parseCursor(cursor); err != nil {
		return nil, err
	}
	if q.Has("nick") {
		if sub.nick, err = parseNick(q.Get("nick")); err != nil {
			return nil, err
		}
		s.present.touch(room, sub.nick, time.Now())
	}
	return sub, nil
}

// wait suspends the request and registers it from its cursor; anything
// already past the cursor resumes it at once.
func (s *server) wait(w http.ResponseWriter, c *continuation.Continuation, sub *subscription) {
	if err := c.Suspend(); err != nil {
		// Shutting down or overloaded. A stream just ends (EventSource
		// reconnects); a poll is told to come back.
		if !sub.sse {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "server busy, retry", http.StatusServiceUnavailable)
		}
		return
	}
	if err := s.mgr.Register(sub.topic, sub.cursor, c); err != nil {
		c.Resume() // answer now, with nothing, rather than wait for nothing
	}
}

// writeEvents writes events in the event-stream format and flushes them;
// with none (a timeout) it writes a keep-alive comment.
func writeEvents(w http.ResponseWriter, evs []event) error {
	rc := http.NewResponseController(w)
	// A client that does not read must not hold the request forever.
	rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer rc.SetWriteDeadline(time.Time{})
	if len(evs) == 0 {
		if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
			return err
		}
	}
	for _, ev := range evs {
		data, _ := json.Marshal(ev)
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, data); err != nil {
			return err
		}
	}
	return rc.Flush()
}
