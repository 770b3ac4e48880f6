package hub_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/hub"
)

// An event stream follows the topics of its URL from their cursors; every
// event's id carries all their cursors, and a reconnection with that id as
// Last-Event-ID resumes every topic with no gap and no duplicate.
func TestEventsResumeEveryTopic(t *testing.T) {
	th := newHub(t, nil)
	a1 := th.publish("a", "a1")
	th.publish("a", "a2")

	es := th.stream(url.Values{"topic": {"a", "b"}, "cursors": {a1.Cursor().String() + ","}}, "")
	assert.Equal(t, "text/event-stream", es.resp.Header.Get("Content-Type"))
	assert.Equal(t, "no", es.resp.Header.Get("X-Accel-Buffering"))
	sa, sb := es.mustNext(), es.mustNext()
	assert.Equal(t, "subscribed", sa.Type)
	assert.Equal(t, a1.Cursor().String(), sa.Frame.Cursor)
	assert.Equal(t, "subscribed", sb.Type)
	assert.Equal(t, "0", sb.Frame.Cursor, "b from now: where it stands")
	assert.Equal(t, a1.Cursor().String()+",0", sb.ID)

	ev := es.mustNext()
	assert.Equal(t, "message", ev.Type)
	assert.Equal(t, "a2", ev.Frame.Data)
	b1 := th.publish("b", "b1")
	ev = es.mustNext()
	assert.Equal(t, "b1", ev.Frame.Data)
	lastID := ev.ID
	assert.Equal(t, ev.Frame.Cursor, strings.Split(lastID, ",")[1])
	assert.Equal(t, b1.Cursor().String(), strings.Split(lastID, ",")[1])
	es.close()

	// Published while the client was away.
	th.publish("a", "a3")
	th.publish("b", "b2")
	again := th.stream(url.Values{"topic": {"a", "b"}, "cursors": {a1.Cursor().String() + ","}}, lastID)
	assert.Equal(t, "subscribed", again.mustNext().Type)
	assert.Equal(t, "subscribed", again.mustNext().Type)
	var got []string
	for len(got) < 2 {
		got = append(got, again.mustNext().Frame.Data)
	}
	assert.Equal(t, []string{"a3", "b2"}, got, "Last-Event-ID, not the query, decides")
}

// An idle stream gets ping events, and a "retry" picked for it.
func TestEventsPing(t *testing.T) {
	th := newHub(t, nil, hub.WithPingInterval(20*time.Millisecond))
	es := th.stream(url.Values{"topic": {"a"}, "transport": {"sse"}}, "")
	pings := 0
	for pings < 3 {
		ev, ok := es.event()
		require.True(t, ok)
		if ev.Type == "ping" {
			assert.Equal(t, "ping", ev.Frame.Type)
			pings++
		}
	}
	th.publish("a", "after the pings")
	assert.Equal(t, "after the pings", es.mustNext().Frame.Data)
}

func TestEventsMissedAfterRestart(t *testing.T) {
	before := newHub(t, nil)
	old := before.publish("a", "old")
	after := newHub(t, nil)
	m := after.publish("a", "new")
	es := after.stream(url.Values{"topic": {"a"}}, old.Cursor().String())
	assert.Equal(t, "subscribed", es.mustNext().Type)
	missed := es.mustNext()
	assert.Equal(t, "missed", missed.Type)
	assert.Equal(t, clientmgr.Cursor{Epoch: m.Epoch}.String(), missed.Frame.Cursor)
	assert.Equal(t, missed.Frame.Cursor, missed.ID, "the id moves to where the topic goes on")
	ev := es.mustNext()
	assert.Equal(t, "new", ev.Frame.Data)
	assert.Equal(t, m.Cursor().String(), ev.ID)
}

// A topic the client may not have is an error event, and the others
// stream; a stream with nothing allowed is refused, so that EventSource
// stops.
func TestEventsAuthorizer(t *testing.T) {
	th := newHub(t, nil, hub.WithAuthorizer(hub.AuthorizerFunc(func(r *http.Request) (hub.Access, error) {
		if r.URL.Query().Get("token") != "good" {
			return nil, io.EOF
		}
		return hub.Grant{Subscribe: func(topic string) bool { return topic != "secret" }}, nil
	})))
	es := th.stream(url.Values{"topic": {"secret", "open"}, "token": {"good"}}, "")
	ev := es.mustNext()
	assert.Equal(t, "hub-error", ev.Type, "EventSource keeps \"error\" for its own")
	assert.Equal(t, "forbidden", ev.Frame.Code)
	assert.Equal(t, "secret", ev.Frame.Topic)
	ev = es.mustNext()
	assert.Equal(t, "subscribed", ev.Type)
	assert.Equal(t, ",0", ev.ID, "the refused topic keeps its place, empty")
	th.publish("open", "hello")
	assert.Equal(t, "hello", es.mustNext().Frame.Data)

	for name, q := range map[string]url.Values{
		"no token":              {"topic": {"open"}},
		"only forbidden topics": {"topic": {"secret"}, "token": {"good"}},
	} {
		status, frames := th.get(q)
		assert.Equal(t, http.StatusForbidden, status, name)
		require.NotEmpty(t, frames, name)
		assert.Equal(t, "forbidden", frames[0].Code, name)
	}
}

// get opens an event stream that the hub refuses, and returns its answer.
func (th *testHub) get(q url.Values) (int, []serverFrame) {
	th.t.Helper()
	req, err := http.NewRequest(http.MethodGet, th.url()+"?"+q.Encode(), nil)
	require.NoError(th.t, err)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := th.srv.Client().Do(req)
	require.NoError(th.t, err)
	defer resp.Body.Close()
	var frames []serverFrame
	require.NoError(th.t, json.NewDecoder(resp.Body).Decode(&frames))
	return resp.StatusCode, frames
}

func TestEventsBadRequests(t *testing.T) {
	th := newHub(t, nil, hub.WithMaxTopics(2))
	for _, tt := range []struct {
		name   string
		q      url.Values
		status int
		code   string
	}{
		{"no topic", url.Values{}, 400, "bad_request"},
		{"too many topics", url.Values{"topic": {"a", "b", "c"}}, 400, "too_many_topics"},
		{"a topic twice", url.Values{"topic": {"a", "a"}}, 400, "bad_request"},
		{"fewer cursors than topics", url.Values{"topic": {"a", "b"}, "cursors": {"0"}}, 400, "bad_request"},
		{"not a cursor", url.Values{"topic": {"a"}, "cursors": {"zz-zz"}}, 400, "bad_request"},
		{"another version", url.Values{"topic": {"a"}, "v": {"2"}}, 400, "unsupported_version"},
	} {
		status, frames := th.get(tt.q)
		assert.Equal(t, tt.status, status, tt.name)
		if assert.Len(t, frames, 1, tt.name) {
			assert.Equal(t, tt.code, frames[0].Code, tt.name)
		}
	}
}

// A long-poll's answer, and each write of an event stream, carries at most
// WithSendQueue bytes of messages (the first always goes): a client far
// behind gets the rest in its next polls or writes, every message once,
// in order, and nothing said missing.
func TestAnswersBoundedInBytes(t *testing.T) {
	const n = 20
	th := newHub(t, nil, hub.WithSendQueue(64<<10), hub.WithPollTimeout(time.Minute))
	from, err := th.mgr.Head(t.Context(), "a")
	require.NoError(t, err)
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("%02d", i))
		th.publish("a", want[i]+strings.Repeat("x", 30<<10))
	}

	t.Run("long-poll", func(t *testing.T) {
		cursor, polls := from.String(), 0
		var got []string
		for len(got) < n {
			status, frames := th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"` + cursor + `"}]`)
			require.Equal(t, http.StatusOK, status)
			polls++
			require.NotEmpty(t, frames)
			assert.LessOrEqual(t, len(frames), 3, "64 KiB: two messages of 30 KiB, and the first always")
			for _, f := range frames {
				require.Equal(t, "message", f.Type)
				got, cursor = append(got, f.Data[:2]), f.Cursor
			}
		}
		assert.Equal(t, want, got)
		assert.GreaterOrEqual(t, polls, n/3)
	})
	t.Run("event stream", func(t *testing.T) {
		es := th.stream(url.Values{"topic": {"a"}, "cursors": {from.String()}}, "")
		defer es.close()
		var got []string
		for len(got) < n {
			ev := es.mustNext()
			require.NotEqual(t, "missed", ev.Type)
			if ev.Type == "message" {
				got = append(got, ev.Frame.Data[:2])
			}
		}
		assert.Equal(t, want, got)
	})
}

// Frames are JSON for JSON parsers: a message of "<" is sent as one byte,
// not as json.Marshal's six (\u003c), which made a history of such
// messages six times its size in every answer.
func TestFramesNotEscapedForHTML(t *testing.T) {
	th := newHub(t, nil)
	from, err := th.mgr.Head(t.Context(), "a")
	require.NoError(t, err)
	th.publish("a", "<b>&</b>")
	resp, err := th.srv.Client().Get(th.url() + "?v=1&transport=longpoll&topic=a&cursors=" + from.String())
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), `"data":"<b>&</b>"`)
}
