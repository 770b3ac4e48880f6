package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/cometkit/cometkit/hub"
	"github.com/cometkit/cometkit/sse"
)

// The modes that speak the hub's wire format (package hub) to its path
// /hub/ on the target, following the topic hubTopic. Each keeps the
// cursor of the last message it received and resumes from it.
const (
	modeWS      = "ws"       // one WebSocket per subscriber
	modeHubSSE  = "hub-sse"  // one event stream per subscriber, resumed from its cursor
	modeHubPoll = "hub-poll" // long-polls, each a POST of a subscribe frame with the cursor
)

const (
	hubPath  = "/hub/"
	hubTopic = "load"
)

// hubFrame is the part of a hub's server frame a subscriber reads.
type hubFrame struct {
	Type   string `json:"type"`
	Cursor string `json:"cursor"`
	Data   string `json:"data"`
	Code   string `json:"code"`
}

// socket reads one WebSocket until it ends. It counts as waiting from its
// subscribed frame on.
func (s *subscriber) socket(ctx context.Context) error {
	u := "ws" + strings.TrimPrefix(s.target, "http") + hubPath
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: s.client, Subprotocols: []string{hub.Subprotocol}})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return loadError(strconv.Itoa(resp.StatusCode))
		}
		return classify(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	s.st.polls.Add(1)
	sub, _ := json.Marshal(map[string]string{"op": "subscribe", "topic": hubTopic, "cursor": s.cursor})
	if err := conn.Write(ctx, websocket.MessageText, sub); err != nil {
		return classify(err)
	}
	waiting := false
	defer func() {
		if waiting {
			s.st.waiting.Add(-1)
		}
	}()
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if code := websocket.CloseStatus(err); code >= 0 {
				return loadError("closed " + strconv.Itoa(int(code)))
			}
			return loadError("stream ended")
		}
		var f hubFrame
		if json.Unmarshal(b, &f) != nil {
			return loadError("decode")
		}
		if err := s.hubFrame(f, &waiting); err != nil {
			return err
		}
	}
}

// hubFrame records one server frame: a subscribed makes the subscriber
// waiting, a message is delivered, and both move its cursor.
func (s *subscriber) hubFrame(f hubFrame, waiting *bool) error {
	switch f.Type {
	case "subscribed":
		if !*waiting {
			*waiting = true
			s.st.waiting.Add(1)
		}
	case "message":
		s.st.deliver(s.id, []string{f.Data}, s.seen, time.Now())
	case "missed":
		s.st.fail("missed")
	case "error":
		return loadError("error " + f.Code)
	default:
		return nil
	}
	s.cursor = f.Cursor
	return nil
}

// hubStream reads one of the hub's event streams until it ends.
func (s *subscriber) hubStream(ctx context.Context) error {
	q := url.Values{"topic": {hubTopic}}
	if s.cursor != "" {
		q.Set("cursors", s.cursor)
	}
	resp, err := s.openStream(ctx, s.target+hubPath+"?"+q.Encode(), "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	waiting := false
	defer func() {
		if waiting {
			s.st.waiting.Add(-1)
		}
	}()
	// The event's id repeats its frame's cursor, and its type the frame's.
	return readEvents(ctx, resp.Body, func(ev sse.Event) error {
		var f hubFrame
		if json.Unmarshal(ev.Data, &f) != nil {
			return loadError("decode")
		}
		return s.hubFrame(f, &waiting)
	})
}

// hubPoll makes one of the hub's long-polls.
func (s *subscriber) hubPoll(ctx context.Context) error {
	body, _ := json.Marshal([]map[string]string{{"op": "subscribe", "topic": hubTopic, "cursor": s.cursor}})
	resp, err := s.longPoll(ctx, hubPath, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := notOK(resp); err != nil {
		return err
	}
	var frames []hubFrame
	if json.NewDecoder(resp.Body).Decode(&frames) != nil {
		return loadError("decode")
	}
	waiting := true // counted by longPoll while the poll was out
	for _, f := range frames {
		if err := s.hubFrame(f, &waiting); err != nil {
			return err
		}
	}
	return nil
}
