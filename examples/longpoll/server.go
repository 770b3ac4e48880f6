package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
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
