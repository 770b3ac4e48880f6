package hub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/hub"
	"github.com/cometkit/cometkit/internal/testproc"
	"github.com/cometkit/cometkit/middleware"
)

// A poll without a cursor learns where the topic stands, at once; a poll
// with one waits for what follows it, and one that times out answers [].
func TestLongPollCursors(t *testing.T) {
	th := newHub(t, nil, hub.WithPollTimeout(200*time.Millisecond))
	th.publish("a", "before")
	status, frames := th.longPoll(`[{"op":"subscribe","topic":"a"},{"op":"subscribe","topic":"b"}]`)
	assert.Equal(t, http.StatusOK, status)
	require.Len(t, frames, 2)
	assert.Equal(t, "subscribed", frames[0].Type)
	assert.Equal(t, "subscribed", frames[1].Type)
	ca, cb := frames[0].Cursor, frames[1].Cursor

	waitsOnAAndB(t, th, func() []serverFrame {
		_, frames := th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"` + ca + `"},{"op":"subscribe","topic":"b","cursor":"` + cb + `"}]`)
		return frames
	})

	status, frames = th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"` + ca + `"}]`)
	assert.Equal(t, http.StatusOK, status)
	assert.Empty(t, frames, "nothing new within the poll timeout")
}

// waitsOnAAndB checks a long-poll of topics a and b from where they stand:
// poll waits on both, and answers with the one message then published on b.
func waitsOnAAndB(t *testing.T, th *testHub, poll func() []serverFrame) {
	t.Helper()
	answer := make(chan []serverFrame, 1)
	go func() { answer <- poll() }()
	waitFor(t, "the poll to wait on both topics", func() bool { return th.mgr.Count("a") == 1 && th.mgr.Count("b") == 1 })
	m := th.publish("b", "news")
	frames := <-answer
	require.Len(t, frames, 1)
	assert.Equal(t, "news", frames[0].Data)
	assert.Equal(t, m.Cursor().String(), frames[0].Cursor)
}

func TestLongPollMissed(t *testing.T) {
	mgr := clientmgr.New(clientmgr.WithHistory(1))
	t.Cleanup(func() { mgr.Close() })
	th := newHub(t, mgr)
	first := th.publish("a", "1")
	th.publish("a", "2")
	last := th.publish("a", "3")
	_, frames := th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"` + first.Cursor().String() + `"}]`)
	require.Len(t, frames, 2)
	assert.Equal(t, serverFrame{Type: "missed", Topic: "a", Cursor: clientmgr.Cursor{Epoch: last.Epoch, Seq: 2}.String()}, frames[0])
	assert.Equal(t, "3", frames[1].Data)
}

// A poll that only publishes answers at once; publishing is refused unless
// the Authorizer allows it.
func TestLongPollPublish(t *testing.T) {
	closed := newHub(t, nil)
	_, frames := closed.longPoll(`[{"op":"publish","topic":"room:a","data":"x","id":1}]`)
	require.Len(t, frames, 1)
	assert.Equal(t, "forbidden", frames[0].Code)

	th := newHub(t, nil, hub.WithAuthorizer(allowPublish("ann")))
	_, frames = th.longPoll(`[{"op":"publish","topic":"room:a","data":"x","id":1},{"op":"ping"},{"op":"unsubscribe","topic":"z"}]`)
	require.Len(t, frames, 2)
	assert.Equal(t, "published", frames[0].Type)
	assert.JSONEq(t, "1", string(frames[0].ID))
	assert.Equal(t, "pong", frames[1].Type)
	b, err := th.mgr.History(context.Background(), "room:a", clientmgr.Cursor{})
	require.NoError(t, err)
	require.Len(t, b.Messages, 1)
	assert.Equal(t, frames[0].Cursor, b.Messages[0].Cursor().String())
}

func TestLongPollBadRequests(t *testing.T) {
	th := newHub(t, nil, hub.WithMaxMessageSize(200), hub.WithMaxTopics(1),
		hub.WithAuthorizer(hub.AuthorizerFunc(func(*http.Request) (hub.Access, error) {
			return hub.Grant{Subscribe: func(topic string) bool { return topic != "secret" }}, nil
		})))
	for _, tt := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"not JSON", `[{`, 400, "bad_request"},
		{"not an array", `{"op":"ping"}`, 400, "bad_request"},
		{"a bad frame among good ones", `[{"op":"ping"},{"op":"fly"}]`, 400, "bad_request"},
		{"too large", `[` + strings.Repeat(`{"op":"ping"},`, 20) + `{"op":"ping"}]`, 413, "too_large"},
	} {
		status, frames := th.longPoll(tt.body)
		assert.Equal(t, tt.status, status, tt.name)
		if assert.Len(t, frames, 1, tt.name) {
			assert.Equal(t, tt.code, frames[0].Code, tt.name)
		}
	}
	// Refusals of one subscription are frames of a 200, answered at once.
	_, frames := th.longPoll(`[{"op":"subscribe","topic":"secret"},{"op":"subscribe","topic":"a","cursor":"x-y"},{"op":"subscribe","topic":"a"},{"op":"subscribe","topic":"b"}]`)
	codes := make([]string, len(frames))
	for i, f := range frames {
		codes[i] = f.Code + f.Type
	}
	assert.Equal(t, []string{"forbiddenerror", "bad_requesterror", "bad_requesterror", "too_many_topicserror"}, codes)

	req, _ := http.NewRequest(http.MethodPut, th.url(), nil)
	resp, err := th.srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, "GET, POST", resp.Header.Get("Allow"))
}

// A cross-origin POST is refused, in the wire format: a long-poll may
// publish with the user's cookies.
func TestLongPollOrigin(t *testing.T) {
	th := newHub(t, nil)
	status, frames := th.longPoll(`[{"op":"ping"}]`, "Origin", "https://evil.example.com")
	assert.Equal(t, http.StatusForbidden, status)
	require.Len(t, frames, 1)
	assert.Equal(t, "error", frames[0].Type)
	assert.Equal(t, "forbidden", frames[0].Code)
	status, _ = th.longPoll(`[{"op":"ping"}]`, "Origin", th.srv.URL)
	assert.Equal(t, http.StatusOK, status)
}

// A cursor from before a restart (a new Manager, a new epoch): missed, then
// the new sequence.
func TestLongPollEpochChange(t *testing.T) {
	before := newHub(t, nil)
	old := before.publish("a", "old")
	after := newHub(t, nil)
	m := after.publish("a", "new")
	_, frames := after.longPoll(`[{"op":"subscribe","topic":"a","cursor":"` + old.Cursor().String() + `"}]`)
	require.Len(t, frames, 2)
	assert.Equal(t, serverFrame{Type: "missed", Topic: "a", Cursor: clientmgr.Cursor{Epoch: m.Epoch}.String()}, frames[0])
	assert.Equal(t, "new", frames[1].Data)
	assert.Equal(t, m.Cursor().String(), frames[1].Cursor)
}

// The Authorizer sees each poll: a refusal is 403 with the error frame, and
// nothing in the poll is done.
func TestLongPollAuthorizer(t *testing.T) {
	th := newHub(t, nil, hub.WithAuthorizer(hub.AuthorizerFunc(func(r *http.Request) (hub.Access, error) {
		if r.Header.Get("Authorization") != "Bearer good" {
			return nil, errors.New("no")
		}
		return hub.Grant{Publish: func(string) bool { return true }}, nil
	})))
	status, frames := th.longPoll(`[{"op":"publish","topic":"a","data":"x"}]`)
	assert.Equal(t, http.StatusForbidden, status)
	require.Len(t, frames, 1)
	assert.Equal(t, "forbidden", frames[0].Code)
	head, err := th.mgr.Head(context.Background(), "a")
	require.NoError(t, err)
	assert.Zero(t, head.Seq, "the refused poll published nothing")

	status, frames = th.longPoll(`[{"op":"publish","topic":"a","data":"x"}]`, "Authorization", "Bearer good")
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "published", frames[0].Type)
}

// An Authorizer that panics (the application's code, parsing what a
// client sent) costs the client a 500, not one of its address's
// connections: with a limit of one, the next poll is served.
func TestLongPollAuthorizerPanics(t *testing.T) {
	var panicked atomic.Bool
	th := newHub(t, nil, hub.WithMaxConnsPerAddr(1), hub.WithLogger(slog.New(slog.DiscardHandler)),
		hub.WithAuthorizer(hub.AuthorizerFunc(func(r *http.Request) (hub.Access, error) {
			if panicked.CompareAndSwap(false, true) {
				panic("a token the application cannot parse")
			}
			return hub.Grant{}, nil
		})))
	resp, err := th.srv.Client().Post(th.url(), "application/json", strings.NewReader(`[{"op":"ping"}]`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	for range 3 {
		status, _ := th.longPoll(`[{"op":"ping"}]`)
		assert.Equal(t, http.StatusOK, status)
	}
}

// WithMiddleware runs inside the hub's Dispatcher: middleware that waits
// for a request's end sees a long-poll end once, after its wait, with the
// status it was answered with.
func TestMiddlewareSeesTheEnd(t *testing.T) {
	ends := make(chan int, 4)
	th := newHub(t, nil, hub.WithPollTimeout(time.Minute), hub.WithMiddleware(
		middleware.Finished(func(r *http.Request, status int, elapsed time.Duration) { ends <- status })))
	status, frames := th.longPoll(`[{"op":"subscribe","topic":"a"}]`)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, http.StatusOK, <-ends)
	answer := make(chan []serverFrame, 1)
	go func() {
		_, frames := th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"` + frames[0].Cursor + `"}]`)
		answer <- frames
	}()
	waitFor(t, "the poll to wait", func() bool { return th.mgr.Count("a") == 1 })
	assert.Empty(t, ends, "not ended while it waits")
	th.publish("a", "news")
	require.Len(t, <-answer, 1)
	assert.Equal(t, http.StatusOK, <-ends)
	assert.Empty(t, ends, "once")
}

// A long-poll by GET subscribes as the event stream's query does, waits
// like a POST, and answers the same frames: a form a proxy may send again
// to another node when the first fails.
func TestLongPollByGet(t *testing.T) {
	th := newHub(t, nil, hub.WithPollTimeout(time.Minute))
	get := func(query string) (int, []serverFrame) {
		resp, err := th.srv.Client().Get(th.url() + "?v=1&transport=longpoll&" + query)
		require.NoError(t, err)
		defer resp.Body.Close()
		var frames []serverFrame
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&frames))
		return resp.StatusCode, frames
	}
	status, frames := get("topic=a&topic=b")
	require.Equal(t, http.StatusOK, status)
	require.Len(t, frames, 2, "from now: where each topic stands")
	ca, cb := frames[0].Cursor, frames[1].Cursor

	waitsOnAAndB(t, th, func() []serverFrame {
		_, frames := get("topic=a&topic=b&cursors=" + ca + "," + cb)
		return frames
	})

	for _, bad := range []string{"", "topic=a&cursors=x,y"} {
		status, frames := get(bad)
		assert.Equal(t, http.StatusBadRequest, status, bad)
		require.Len(t, frames, 1)
		assert.Equal(t, "bad_request", frames[0].Code)
	}
}

// A long-poll whose client does not read its answer (a whole history, 12 MB
// here, far more than the sockets' buffers hold) holds the worker writing
// it for WithWriteTimeout, no longer: on a Dispatcher of one worker, the
// next request is answered once the write gives up, and the slow client's
// connection is closed.
func TestLongPollSlowReader(t *testing.T) {
	mgr := clientmgr.New(clientmgr.WithHistory(200))
	t.Cleanup(func() { mgr.Close() })
	d := continuation.NewDispatcher(http.NotFoundHandler(), continuation.WithWorkers(1))
	th := newHub(t, mgr, hub.WithDispatcher(d), hub.WithWriteTimeout(300*time.Millisecond),
		hub.WithSendQueue(32<<20)) // answers of the whole history, far more than the sockets hold

	from, err := mgr.Head(context.Background(), "big")
	require.NoError(t, err)
	chunk := strings.Repeat("x", 60<<10)
	for range 200 {
		th.publish("big", chunk)
	}

	slow, err := testproc.DialNonReader(th.srv.Listener.Addr().String())
	require.NoError(t, err)
	defer slow.Close()
	fmt.Fprintf(slow, "GET /hub/?v=1&transport=longpoll&topic=big&cursors=%s HTTP/1.1\r\nHost: hub\r\n\r\n", from)
	// Its answer has begun: the worker is writing it.
	require.NoError(t, slow.SetReadDeadline(time.Now().Add(20*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReaderSize(slow, 4096), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	answered := make(chan error, 1)
	go func() {
		status, frames := th.longPoll(`[{"op":"ping"}]`)
		if status != http.StatusOK || len(frames) != 1 {
			answered <- fmt.Errorf("status %d, frames %v", status, frames)
			return
		}
		answered <- nil
	}()
	select {
	case err := <-answered:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the next request was not answered: the slow client holds the only worker")
	}

	// The slow client's answer was cut: its body ends before its length.
	n, err := io.Copy(io.Discard, resp.Body)
	assert.Error(t, err, "the answer was cut short, so its body cannot end cleanly")
	assert.Less(t, n, resp.ContentLength)
}
