package hub

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/sse"
)

// errorEvent is the event type of error frames on a stream: every other
// frame's event is its type, but EventSource fires "error" itself when the
// connection fails, and a listener could not tell the two apart.
const errorEvent = "hub-error"

// A stream is one event stream: the topics of its URL, in order, and the
// cursor of each, which every event's id carries, so that a reconnecting
// EventSource resumes each topic where it was.
type stream struct {
	h       *Hub
	peer    peer
	r       *http.Request
	topics  []string
	index   map[string]int
	cursors []string // tokens; "" for a topic the stream does not follow
	live    []bool   // followed: allowed, and its cursor read
}

// serveEvents begins an event stream. Everything that can refuse it is
// checked before it starts, so that a refusal is a status code: once a
// stream has begun, EventSource sees only events.
func (h *Hub) serveEvents(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
	p, ok := h.admit(w, r, c, transportSSE)
	if !ok {
		return
	}
	q := r.URL.Query()
	st := &stream{h: h, peer: p, r: r, topics: q["topic"], index: map[string]int{}}
	switch {
	case len(st.topics) == 0:
		h.refuse(w, http.StatusBadRequest, codeBadRequest, "an event stream needs a topic: ?topic=…")
		return
	case len(st.topics) > h.cfg.maxTopics:
		h.refuse(w, http.StatusBadRequest, codeTooManyTopics, "too many topics for one connection")
		return
	}
	for i, t := range st.topics {
		if _, dup := st.index[t]; dup {
			h.refuse(w, http.StatusBadRequest, codeBadRequest, "a topic is named twice")
			return
		}
		st.index[t] = i
	}
	// A reconnecting EventSource sends the last id it saw; a first request
	// has the cursors in the query, in the same form.
	list := sse.LastEventID(r)
	if list == "" {
		list = q.Get("cursors")
	}
	st.cursors = make([]string, len(st.topics))
	if list != "" {
		if st.cursors = strings.Split(list, ","); len(st.cursors) != len(st.topics) {
			h.refuse(w, http.StatusBadRequest, codeBadRequest, "the cursors do not match the topics: one per topic, in order, separated by commas")
			return
		}
	}

	var refusals []sse.Event
	forbidden := false
	st.live = make([]bool, len(st.topics))
	for i, t := range st.topics {
		code, message := "", ""
		if !p.access.CanSubscribe(t) {
			code, message, forbidden = codeForbidden, "not allowed to subscribe to this topic", true
		} else {
			var at clientmgr.Cursor
			if at, code, message = h.subscribeFrom(r.Context(), t, st.cursors[i]); code == "" {
				st.cursors[i], st.live[i] = at.String(), true
				continue
			}
		}
		st.cursors[i] = "" // what the id carries for it: nothing the client made up
		h.metrics.refused(code)
		e := errorFrame(code, message)
		e.Topic = t
		refusals = append(refusals, sse.Event{Type: errorEvent, Data: e.encode()})
	}
	if len(refusals) == len(st.topics) {
		// Nothing to stream: refuse it, so that EventSource stops instead of
		// reconnecting to the same refusals.
		frames := make([][]byte, len(refusals))
		for i, ev := range refusals {
			frames[i] = ev.Data
		}
		status := http.StatusBadRequest
		if forbidden {
			status = http.StatusForbidden
		}
		writeFrames(w, status, frames, st.h.cfg.writeTimeout)
		return
	}

	// A retry picked at random per stream, so that the streams a restart
	// ends do not all come back in the same second.
	if err := sse.Start(w, time.Duration(1000+rand.IntN(4000))*time.Millisecond); err != nil {
		return
	}
	events := refusals
	for i, t := range st.topics {
		if st.live[i] {
			events = append(events, sse.Event{ID: st.id(), Type: "subscribed", Data: subscribedFrame(t, st.cursor(i))})
		}
	}
	if st.send(w, events) == nil {
		c.SetAttribute(stateAttr, st)
		st.wait(w, c)
	}
}

// cursor returns a followed topic's cursor, which the stream made.
func (st *stream) cursor(i int) clientmgr.Cursor {
	at, _ := clientmgr.ParseCursor(st.cursors[i])
	return at
}

// id is the event id that resumes every topic: the cursors, in the URL's
// order, separated by commas.
func (st *stream) id() string { return strings.Join(st.cursors, ",") }

// wait suspends the stream until its topics have something, or the ping
// interval passes. A stream that cannot wait (the hub is draining, the
// Dispatcher is full, the Manager failed) ends, and its client reconnects.
func (st *stream) wait(w http.ResponseWriter, c *continuation.Continuation) {
	c.SetTimeout(st.h.cfg.pingInterval)
	if c.Suspend() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(st.r.Context(), readTimeout)
	defer cancel()
	for i, t := range st.topics {
		if !st.live[i] {
			continue
		}
		if err := st.h.mgr.RegisterCursor(ctx, t, st.cursor(i), c); err != nil {
			code, message := managerError(err)
			st.h.metrics.refused(code)
			e := errorFrame(code, message)
			e.Topic = t
			st.send(w, []sse.Event{{Type: errorEvent, Data: e.encode()}})
			c.Complete()
			return
		}
	}
}

// resume writes what the topics received, or a ping, and waits again.
func (st *stream) resume(w http.ResponseWriter, c *continuation.Continuation) {
	var events []sse.Event
	room := budget{left: st.h.cfg.sendQueue}
	for _, b := range clientmgr.Batches(c) {
		i := st.index[b.Topic]
		if !b.Complete {
			st.cursors[i] = resumedFrom(b).String()
			events = append(events, sse.Event{ID: st.id(), Type: "missed", Data: missedFrame(b.Topic, resumedFrom(b))})
		}
		all := true
		for _, m := range b.Messages {
			f := messageFrame(m)
			st.cursors[i] = m.Cursor().String()
			id := st.id()
			if !room.take(len(f) + len(id)) {
				// The rest waits in the history: the stream registers
				// again from the last message it wrote, and the next
				// write takes what follows at once.
				st.cursors[i] = clientmgr.Cursor{Epoch: m.Epoch, Seq: m.Seq - 1}.String()
				all = false
				break
			}
			events = append(events, sse.Event{ID: id, Type: "message", Data: f})
		}
		if all {
			st.cursors[i] = b.Next.String()
		}
	}
	if len(events) == 0 {
		events = []sse.Event{{Type: "ping", Data: pingFrame}}
	}
	if err := st.send(w, events); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			st.h.metrics.slow.WithLabelValues(transportSSE).Inc()
		}
		return // the client is gone or does not read: the stream ends
	}
	st.wait(w, c)
}

// send writes events and flushes them within WithWriteTimeout.
func (st *stream) send(w http.ResponseWriter, events []sse.Event) error {
	var b bytes.Buffer
	for _, ev := range events {
		if _, err := ev.WriteTo(&b); err != nil {
			return err
		}
	}
	rc := http.NewResponseController(w)
	if rc.SetWriteDeadline(time.Now().Add(st.h.cfg.writeTimeout)) == nil {
		defer rc.SetWriteDeadline(time.Time{})
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	return rc.Flush()
}
