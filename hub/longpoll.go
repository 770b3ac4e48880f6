package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

// A poll is one long-poll: the frames it answers with whatever its
// subscriptions receive.
type poll struct {
	answer       [][]byte
	writeTimeout time.Duration
	maxAnswer    int // bytes of messages in the answer (WithSendQueue)
}

// servePoll serves a long-poll: a POST of an array of client frames. Its
// publishes and pings are answered at once; its subscriptions, each with
// its cursor, wait (the request suspends) until one of them has something,
// or until WithPollTimeout. A poll lists all of the client's subscriptions
// each time: the hub keeps nothing between two polls but the topics'
// histories.
func (h *Hub) servePoll(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
	p, ok := h.admit(w, r, c, transportLongPoll)
	if !ok {
		return
	}
	var frames []clientFrame
	if r.Method == http.MethodGet {
		var err error
		if frames, err = queryFrames(r.URL.Query()); err != nil {
			h.refuse(w, http.StatusBadRequest, codeBadRequest, err.Error())
			return
		}
	} else {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.cfg.maxMessageSize)))
		if err != nil {
			if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
				h.refuse(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("a long-poll's body may hold %d bytes", h.cfg.maxMessageSize))
			}
			return // otherwise the client left in the middle of its body
		}
		if frames, err = parseFrames(body); err != nil {
			h.refuse(w, http.StatusBadRequest, codeBadRequest, err.Error())
			return
		}
	}

	type subscribe struct {
		topic string
		after clientmgr.Cursor
	}
	var subs []subscribe
	seen := map[string]bool{}
	pl := &poll{writeTimeout: h.cfg.writeTimeout, maxAnswer: h.cfg.sendQueue}
	refuseTopic := func(topic, code, message string) {
		h.metrics.refused(code)
		e := errorFrame(code, message)
		e.Topic = topic
		pl.answer = append(pl.answer, e.encode())
	}
	for _, f := range frames {
		switch f.Op {
		case opPing:
			pl.answer = append(pl.answer, pongFrame)
		case opPublish:
			pl.answer = append(pl.answer, h.publish(r.Context(), &p, f))
		case opUnsubscribe:
			// Nothing to do: the next poll leaves the topic out.
		case opSubscribe:
			switch {
			case seen[f.Topic]:
				refuseTopic(f.Topic, codeBadRequest, "a topic is subscribed twice in one poll")
			case len(seen) >= h.cfg.maxTopics:
				refuseTopic(f.Topic, codeTooManyTopics, fmt.Sprintf("a connection may follow %d topics", h.cfg.maxTopics))
			case !p.access.CanSubscribe(f.Topic):
				refuseTopic(f.Topic, codeForbidden, "not allowed to subscribe to this topic")
			default:
				seen[f.Topic] = true
				after, code, message := h.subscribeFrom(r.Context(), f.Topic, f.Cursor)
				switch {
				case code != "":
					refuseTopic(f.Topic, code, message)
				case f.Cursor == "":
					// From now: the client learns where now is, and polls
					// again from there, so that nothing published between
					// the two polls is lost.
					pl.answer = append(pl.answer, subscribedFrame(f.Topic, after))
				default:
					subs = append(subs, subscribe{f.Topic, after})
				}
			}
		}
	}
	if len(subs) == 0 {
		writeFrames(w, http.StatusOK, pl.answer, pl.writeTimeout)
		return
	}
	c.SetTimeout(h.cfg.pollTimeout)
	if err := c.Suspend(); err != nil {
		// Draining, or too many waiting: what was done is answered, and the
		// client polls again after a while.
		e := errorFrame(codeUnavailable, "the hub cannot hold a long-poll now")
		e.RetryMs = 1000
		h.metrics.refused(codeUnavailable)
		writeFrames(w, http.StatusOK, append(pl.answer, e.encode()), pl.writeTimeout)
		return
	}
	c.SetAttribute(stateAttr, pl)
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	for _, s := range subs {
		if err := h.mgr.RegisterCursor(ctx, s.topic, s.after, c); err != nil {
			code, message := managerError(err)
			refuseTopic(s.topic, code, message)
		}
	}
	if len(pl.answer) > 0 {
		c.Resume() // something to say already; the next dispatch adds what the history gave
	}
}

// queryFrames reads the subscriptions of a long-poll made as a GET, in
// the form an event stream takes them: ?topic=a&topic=b&cursors=ca,cb (no
// cursors: every topic from now). A GET long-poll only subscribes, so a
// proxy may send it again to another node when the first fails.
func queryFrames(q url.Values) ([]clientFrame, error) {
	topics := q["topic"]
	cursors := make([]string, len(topics))
	if list := q.Get("cursors"); list != "" {
		if cursors = strings.Split(list, ","); len(cursors) != len(topics) {
			return nil, errors.New("the cursors do not match the topics: one per topic, in order, separated by commas")
		}
	}
	if len(topics) == 0 {
		return nil, errors.New("a long-poll by GET needs a topic: ?transport=longpoll&topic=…")
	}
	frames := make([]clientFrame, len(topics))
	for i, t := range topics {
		frames[i] = clientFrame{Op: opSubscribe, Topic: t, Cursor: cursors[i]}
	}
	return frames, nil
}

// resume answers the poll: its frames, then what each subscription
// received (nothing, when the poll timed out).
func (pl *poll) resume(w http.ResponseWriter, c *continuation.Continuation) {
	frames := pl.answer
	room := budget{left: pl.maxAnswer}
	for _, b := range clientmgr.Batches(c) {
		frames = batchFrames(b, frames, &room)
	}
	writeFrames(w, http.StatusOK, frames, pl.writeTimeout)
}
