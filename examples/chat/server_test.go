package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/middleware"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type chat struct {
	t      *testing.T
	s      *server
	ts     *httptest.Server
	client *http.Client
}

func newChat(t *testing.T, pollTimeout time.Duration) *chat {
	t.Helper()
	return newChatNode(t, pollTimeout, "")
}

// newChatNode is a chat server sharing its rooms through the Redis at
// redisURL ("" for none).
func newChatNode(t *testing.T, pollTimeout time.Duration, redisURL string) *chat {
	t.Helper()
	s, err := newServer(config{pollTimeout: pollTimeout, history: 256, logger: slog.New(slog.DiscardHandler), redisURL: redisURL})
	require.NoError(t, err)
	ts := httptest.NewServer(s)
	c := &chat{t: t, s: s, ts: ts, client: ts.Client()}
	t.Cleanup(func() {
		s.Close(context.Background())
		c.client.CloseIdleConnections()
		ts.Close()
	})
	return c
}

func (c *chat) post(path string, fields url.Values) *http.Response {
	c.t.Helper()
	resp, err := c.client.PostForm(c.ts.URL+path, fields)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (c *chat) get(path string, header ...string) *http.Response {
	c.t.Helper()
	req, _ := http.NewRequestWithContext(c.t.Context(), http.MethodGet, c.ts.URL+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.client.Do(req)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func decodeEvents(t *testing.T, resp *http.Response) []event {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var evs []event
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&evs))
	return evs
}

type joined struct {
	Cursor  uint64   `json:"cursor"`
	History []event  `json:"history"`
	Members []string `json:"members"`
}

func (c *chat) join(room, nick string) joined {
	c.t.Helper()
	resp := c.post("/rooms/"+room+"/join", url.Values{"nick": {nick}})
	require.Equal(c.t, http.StatusOK, resp.StatusCode)
	var j joined
	require.NoError(c.t, json.NewDecoder(resp.Body).Decode(&j))
	return j
}

func (c *chat) say(room, nick, text string) int {
	c.t.Helper()
	return c.post("/rooms/"+room+"/messages", url.Values{"nick": {nick}, "text": {text}}).StatusCode
}

func TestJoinPostPoll(t *testing.T) {
	c := newChat(t, time.Minute)
	j := c.join("lobby", "alice")
	assert.Equal(t, uint64(1), j.Cursor)
	assert.Equal(t, []string{"alice"}, j.Members)
	require.Len(t, j.History, 1)
	assert.Equal(t, "join", j.History[0].Type)

	polled := make(chan []event)
	go func() {
		resp := c.get("/rooms/lobby/subscribe?transport=longpoll&since=1&nick=bob")
		var evs []event
		json.NewDecoder(resp.Body).Decode(&evs)
		polled <- evs
	}()
	require.Eventually(t, func() bool { return c.s.mgr.Count("room:lobby") == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, http.StatusNoContent, c.say("lobby", "alice", "<script>alert(1)</script>"))
	evs := <-polled
	require.Len(t, evs, 1)
	assert.Equal(t, event{Seq: 2, Type: "message", Nick: "alice", Text: "<script>alert(1)</script>", Time: evs[0].Time}, evs[0])

	// A client that re-polls with its cursor misses nothing, even what was
	// posted while it was away.
	c.say("lobby", "alice", "one")
	c.say("lobby", "alice", "two")
	evs = decodeEvents(t, c.get("/rooms/lobby/subscribe?since=2"))
	require.Len(t, evs, 2)
	assert.Equal(t, []string{"one", "two"}, []string{evs[0].Text, evs[1].Text})

	var members []string
	require.NoError(t, json.NewDecoder(c.get("/rooms/lobby/members").Body).Decode(&members))
	assert.Equal(t, []string{"alice", "bob"}, members, "presence: joined, and polling with a nick")

	// The last 50 on join.
	for range 60 {
		c.s.publish(t.Context(), "big", event{Type: "message", Nick: "x", Text: "m"})
	}
	assert.Len(t, c.join("big", "carol").History, 50)
}

func TestLongPollTimeout(t *testing.T) {
	c := newChat(t, 50*time.Millisecond)
	assert.Empty(t, decodeEvents(t, c.get("/rooms/quiet/subscribe?since=0")))
}

// The event stream: repeated suspend cycles on one response; a reconnect
// with Last-Event-ID resumes after it.
func TestEventStream(t *testing.T) {
	c := newChat(t, time.Minute)
	c.join("lobby", "alice")          // seq 1
	c.say("lobby", "alice", "before") // seq 2

	resp := c.get("/rooms/lobby/subscribe?transport=sse&since=0")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
	lines := bufio.NewScanner(resp.Body)
	next := func() (id, data string) {
		for lines.Scan() {
			line := lines.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && id != "":
				return id, data
			}
		}
		t.Fatal("stream ended")
		return "", ""
	}
	id, _ := next()
	assert.Equal(t, "1", id)
	id, data := next()
	assert.Equal(t, "2", id)
	assert.Contains(t, data, `"text":"before"`)
	c.say("lobby", "alice", "live") // seq 3, on the same response
	id, data = next()
	assert.Equal(t, "3", id)
	assert.Contains(t, data, `"text":"live"`)

	c.say("lobby", "alice", "while away") // seq 4
	resp2 := c.get("/rooms/lobby/subscribe?transport=sse", "Last-Event-ID", "3")
	lines = bufio.NewScanner(resp2.Body)
	id, data = next()
	assert.Equal(t, "4", id)
	assert.Contains(t, data, "while away")
}

func TestBadInput(t *testing.T) {
	c := newChat(t, time.Minute)
	long := strings.Repeat("x", maxMessage+1)
	tests := []struct {
		name   string
		resp   func() *http.Response
		code   int
		reason string
	}{
		{"bad room", func() *http.Response { return c.get("/rooms/Bad!/members") }, 400, "bad room name"},
		{"room too long", func() *http.Response { return c.get("/rooms/" + strings.Repeat("a", 33) + "/members") }, 400, "bad room name"},
		{"empty nick", func() *http.Response { return c.post("/rooms/a/join", url.Values{"nick": {" "}}) }, 400, "bad nickname"},
		{"nick with markup", func() *http.Response { return c.post("/rooms/a/join", url.Values{"nick": {"<b>"}}) }, 400, "bad nickname"},
		{"empty message", func() *http.Response {
			return c.post("/rooms/a/messages", url.Values{"nick": {"al"}, "text": {"  "}})
		}, 400, "empty message"},
		{"oversized message", func() *http.Response {
			return c.post("/rooms/a/messages", url.Values{"nick": {"al"}, "text": {long}})
		}, 400, "message too long"},
		{"invalid UTF-8", func() *http.Response {
			return c.post("/rooms/a/messages", url.Values{"nick": {"al"}, "text": {"\xff"}})
		}, 400, "message is not valid UTF-8"},
		{"10 MB body", func() *http.Response {
			return c.post("/rooms/a/messages", url.Values{"nick": {"al"}, "text": {strings.Repeat("x", 10<<20)}})
		}, 413, "request too large"},
		{"cursor beyond uint64", func() *http.Response { return c.get("/rooms/a/subscribe?since=18446744073709551616") }, 400, "bad cursor"},
		{"bad cursor", func() *http.Response { return c.get("/rooms/a/subscribe?since=abc") }, 400, "bad cursor"},
		{"negative cursor", func() *http.Response { return c.get("/rooms/a/subscribe?since=-1") }, 400, "bad cursor"},
		{"bad Last-Event-ID", func() *http.Response {
			return c.get("/rooms/a/subscribe?transport=sse", "Last-Event-ID", "x")
		}, 400, "bad cursor"},
		{"unknown transport", func() *http.Response { return c.get("/rooms/a/subscribe?transport=ws") }, 400, "unknown transport"},
		{"method not allowed", func() *http.Response { return c.get("/rooms/a/join") }, 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.resp()
			assert.Equal(t, tt.code, resp.StatusCode)
			assert.True(t, strings.HasPrefix(body(t, resp), tt.reason))
		})
	}
}

func TestRateLimit(t *testing.T) {
	c := newChat(t, time.Minute)
	var codes []int
	for range 8 {
		codes = append(codes, c.say("lobby", "alice", "hi"))
	}
	assert.Equal(t, []int{204, 204, 204, 204, 204}, codes[:5], "a burst of 5 is fine")
	assert.Contains(t, codes[5:], http.StatusTooManyRequests)
	resp := c.post("/rooms/lobby/messages", url.Values{"nick": {"alice"}, "text": {"again"}})
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Equal(t, http.StatusNoContent, c.say("lobby", "bob", "hi"), "the limit is per client")
}

// Shutdown answers every waiting client: polls with [], streams end.
func TestShutdownAnswersWaitingClients(t *testing.T) {
	c := newChat(t, time.Hour)
	poll := make(chan int)
	go func() {
		resp := c.get("/rooms/lobby/subscribe?since=0")
		io.Copy(io.Discard, resp.Body)
		poll <- resp.StatusCode
	}()
	stream := c.get("/rooms/lobby/subscribe?transport=sse")
	require.Eventually(t, func() bool { return c.s.mgr.Count("room:lobby") == 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, c.s.mw.Shutdown(t.Context()))
	assert.Equal(t, http.StatusOK, <-poll)
	_, err := io.ReadAll(stream.Body) // ends, rather than hangs
	assert.NoError(t, err)
}

func TestPageAndOps(t *testing.T) {
	c := newChat(t, time.Minute)
	assert.NoError(t, middleware.Check(c.s.handler.(chi.Routes)), "the chat's middleware order")
	page := c.get("/")
	assert.Equal(t, http.StatusOK, page.StatusCode)
	assert.Contains(t, body(t, page), "<script src=\"/app.js\">")
	assert.Equal(t, "ok\n", body(t, c.get("/healthz")))
	assert.Contains(t, body(t, c.get("/metrics")), "cometkit_dispatches_total")
}
