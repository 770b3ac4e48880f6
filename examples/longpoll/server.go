package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/servlet"
)

// topic is the one channel this example publishes on.
const topic = "messages"

// maxMessage bounds a published message; larger ones get 413.
const maxMessage = 64 << 10

// cursorAttr keeps a subscriber's ?since= cursor across its dispatches.
const cursorAttr = "longpoll.since"

// newContainer maps the two servlets and starts the container.
func newContainer(mgr *clientmgr.Manager, opts ...continuation.Option) (*servlet.Container, error) {
	c := servlet.NewContainer(opts...)
	c.Handle("/subscribe", &subscribe{mgr: mgr})
	c.Handle("/events", &events{mgr: mgr})
	c.Handle("/publish", &publish{mgr: mgr})
	return c, c.Start()
}

// subscribe waits for messages. Without ?since= it keeps the classic
// protocol: the body is the next message published, as text/plain, and a
// message published while the client is between two polls is not seen.
// With ?since=N the body is a JSON array of every message after Seq N,
// taken atomically from the topic's history at registration, so a client
// that re-polls with the last Seq it saw never misses one.
type subscribe struct{ mgr *clientmgr.Manager }

type jsonMessage struct {
	Seq  uint64 `json:"seq"`
	Data string `json:"data"`
}

func (s *subscribe) DoGet(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		s.wait(w, r, c)
		return
	}
	msgs := clientmgr.Messages(c)
	since, wantJSON := c.Attribute(cursorAttr).(uint64)
	if !wantJSON {
		if len(msgs) == 0 { // expired: nothing new, poll again
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, string(msgs[0].Data))
		return
	}
	if len(msgs) > 0 && msgs[0].Seq > since+1 {
		// The batch dropped its oldest (a slow consumer): the history has
		// them, as far back as it reaches.
		msgs, _ = s.mgr.Since(topic, since)
	}
	writeJSON(w, msgs)
}

func (s *subscribe) wait(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
	after := s.mgr.LastSeq(topic) // classic: only what comes next
	if v := r.URL.Query().Get("since"); v != "" || r.URL.Query().Has("since") {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			http.Error(w, "bad cursor: since must be a message sequence number (0 or more)", http.StatusBadRequest)
			return
		}
		after = n
		c.SetAttribute(cursorAttr, n)
	}
	if err := c.Suspend(); err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if err := s.mgr.Register(topic, after, c); err != nil {
		// Closed or full: ending the suspension answers now.
		c.Resume()
	}
}

func writeJSON(w http.ResponseWriter, msgs []clientmgr.Message) {
	out := make([]jsonMessage, len(msgs))
	for i, m := range msgs {
		out[i] = jsonMessage{Seq: m.Seq, Data: string(m.Data)}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// events streams the topic as server-sent events (text/event-stream): one
// response, many suspend cycles. Each message is an event whose id is its
// Seq, so a client that reconnects with Last-Event-ID (or ?since=N) misses
// nothing; a timeout writes a keep-alive comment and waits again.
type events struct{ mgr *clientmgr.Manager }

func (e *events) DoGet(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		cursor := r.URL.Query().Get("since")
		if id := r.Header.Get("Last-Event-ID"); id != "" {
			cursor = id // EventSource's own reconnect
		}
		after := e.mgr.LastSeq(topic)
		if cursor != "" {
			n, err := strconv.ParseUint(cursor, 10, 64)
			if err != nil {
				http.Error(w, "bad cursor: since and Last-Event-ID must be a message sequence number (0 or more)", http.StatusBadRequest)
				return
			}
			after = n
		}
		c.SetAttribute(cursorAttr, after)
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		io.WriteString(w, "retry: 1000\n\n")
		http.NewResponseController(w).Flush()
		e.wait(c, after)
		return
	}
	after := c.Attribute(cursorAttr).(uint64)
	msgs := clientmgr.Messages(c)
	if len(msgs) > 0 && msgs[0].Seq > after+1 {
		msgs, _ = e.mgr.Since(topic, after) // the batch overflowed
	}
	if err := writeEvents(w, msgs); err != nil {
		return // the client is gone or does not read
	}
	if len(msgs) > 0 {
		after = msgs[len(msgs)-1].Seq
		c.SetAttribute(cursorAttr, after)
	}
	e.wait(c, after)
}

// wait suspends the stream until the next message after the cursor. When
// suspending is refused (shutting down, or full) the stream ends and the
// client reconnects with its Last-Event-ID.
func (e *events) wait(c *continuation.Continuation, after uint64) {
	if err := c.Suspend(); err != nil {
		return
	}
	if err := e.mgr.Register(topic, after, c); err != nil {
		c.Complete()
	}
}

// writeEvents writes msgs as events, or a keep-alive comment when there are
// none, and flushes them within a write deadline, so that a client that
// stops reading cannot hold its request forever.
func writeEvents(w http.ResponseWriter, msgs []clientmgr.Message) error {
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer rc.SetWriteDeadline(time.Time{})
	var b strings.Builder
	if len(msgs) == 0 {
		b.WriteString(": keep-alive\n\n")
	}
	for _, m := range msgs {
		b.WriteString("id: " + strconv.FormatUint(m.Seq, 10) + "\n")
		// A message may hold newlines; each line is its own data: field.
		for line := range strings.SplitSeq(string(m.Data), "\n") {
			b.WriteString("data: " + line + "\n")
		}
		b.WriteString("\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	return rc.Flush()
}

// publish broadcasts the form field message to every subscriber.
type publish struct{ mgr *clientmgr.Manager }

func (p *publish) DoGet(w http.ResponseWriter, r *http.Request) { p.DoPost(w, r) }
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
	msg := r.Form.Get("message")
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
