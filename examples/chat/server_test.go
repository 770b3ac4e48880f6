package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
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

// A chat is a chat server on a loopback socket.
type chat struct {
	t  *testing.T
	s  *server
	ts *httptest.Server
}

// newChat starts a chat server on a loopback socket; see testConfig.
func newChat(t *testing.T, set ...func(*config)) *chat {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	t.Cleanup(ts.Close) // after the server's clean-up, which answers its waiting clients
	s := startServer(t, testConfig(set...))
	ts.Config.Handler = s
	ts.Start()
	return &chat{t: t, s: s, ts: ts}
}

// testConfig is the default settings, but a poll timeout of a minute and
// joins limited only per room, changed by set.
func testConfig(set ...func(*config)) config {
	cfg := defaults()
	cfg.pollTimeout, cfg.joinRate = time.Minute, 1000
	for _, f := range set {
		f(&cfg)
	}
	return cfg
}

// startServer starts a chat server, drained and closed at the end of t.
func startServer(t *testing.T, cfg config) *server {
	t.Helper()
	s, err := newServer(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		s.mw.Shutdown(context.Background())
		s.Close()
	})
	return s
}

func pollTimeout(d time.Duration) func(*config) { return func(c *config) { c.pollTimeout = d } }

// A person is a client with its own cookies, so its own session, talking
// to a chat server (any node of several: cookies do not depend on ports).
type person struct {
	t      *testing.T
	base   string
	client *http.Client
}

func (c *chat) person() *person { return newPerson(c.t, c.ts.URL, c.ts.Client().Transport) }

// wirePerson is a person talking to the server at addr (host:port).
func wirePerson(t *testing.T, addr string) *person {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return newPerson(t, "http://"+addr, tr)
}

func newPerson(t *testing.T, base string, tr http.RoundTripper) *person {
	jar, _ := cookiejar.New(nil)
	return &person{t: t, base: base, client: &http.Client{Jar: jar, Transport: tr, Timeout: time.Minute}}
}

// at is the same person talking to another server (base is its URL).
func (p *person) at(base string) *person {
	q := *p
	q.base = base
	return &q
}

func (p *person) do(req *http.Request) *http.Response {
	p.t.Helper()
	resp, err := p.client.Do(req)
	require.NoError(p.t, err)
	p.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (p *person) post(path string, fields url.Values, header ...string) *http.Response {
	p.t.Helper()
	req, _ := http.NewRequestWithContext(p.t.Context(), http.MethodPost, p.base+path, strings.NewReader(fields.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return p.do(req)
}

func (p *person) get(path string, header ...string) *http.Response {
	p.t.Helper()
	req, _ := http.NewRequestWithContext(p.t.Context(), http.MethodGet, p.base+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return p.do(req)
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

type joined struct {
	Nick    string   `json:"nick"`
	Cursor  string   `json:"cursor"`
	History []event  `json:"history"`
	Members []string `json:"members"`
}

// answer is a long-poll's answer.
type answer struct {
	Events   []event `json:"events"`
	Complete bool    `json:"complete"`
	Next     string  `json:"next"`
}

func decode[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var v T
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	return v
}

func (p *person) join(room, nick string) joined {
	p.t.Helper()
	return decode[joined](p.t, p.post("/rooms/"+room+"/join", url.Values{"nick": {nick}}))
}

func (p *person) say(room, text string) int {
	p.t.Helper()
	return p.post("/rooms/"+room+"/messages", url.Values{"text": {text}}).StatusCode
}

func (p *person) poll(room, cursor string) answer {
	p.t.Helper()
	return decode[answer](p.t, p.get("/rooms/"+room+"/subscribe?transport=longpoll&since="+url.QueryEscape(cursor)))
}

func (p *person) members(room string) []string {
	p.t.Helper()
	return decode[[]string](p.t, p.get("/rooms/"+room+"/members"))
}

func texts(evs []event) []string {
	out := []string{}
	for _, ev := range evs {
		out = append(out, ev.Type+":"+ev.Nick+":"+ev.Text)
	}
	return out
}

func TestJoinPostPoll(t *testing.T) {
	c := newChat(t)
	alice, bob := c.person(), c.person()
	j := alice.join("lobby", "alice")
	assert.Equal(t, "alice", j.Nick)
	assert.NotEmpty(t, j.Cursor)
	assert.Equal(t, []string{"alice"}, j.Members)
	assert.Equal(t, []string{"join:alice:"}, texts(j.History))

	polled := make(chan answer)
	go func() { polled <- bob.poll("lobby", j.Cursor) }()
	require.Eventually(t, func() bool { return c.s.mgr.Count("room:lobby") == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, http.StatusNoContent, alice.say("lobby", "<script>alert(1)</script>"))
	a := <-polled
	assert.True(t, a.Complete)
	assert.Equal(t, []string{"message:alice:<script>alert(1)</script>"}, texts(a.Events))

	// A client that polls again with its cursor misses nothing, even what
	// was posted while it was away.
	alice.say("lobby", "one")
	alice.say("lobby", "two")
	b := bob.poll("lobby", a.Next)
	assert.Equal(t, []string{"message:alice:one", "message:alice:two"}, texts(b.Events))
	assert.True(t, b.Complete)
	assert.NotEqual(t, a.Next, b.Next)

	// A join answers the room's last 50 events.
	for range 60 {
		require.NoError(t, c.s.publish(t.Context(), "big", event{Type: "message", Nick: "x", Text: "m"}))
	}
	assert.Len(t, c.person().join("big", "carol").History, historyOnJoin)
}

func TestLongPollTimeout(t *testing.T) {
	c := newChat(t, pollTimeout(50*time.Millisecond))
	a := c.person().poll("quiet", "")
	assert.Empty(t, a.Events)
	assert.True(t, a.Complete)
}

// sseReader reads an event stream one event (or comment block) at a time.
type sseReader struct {
	t     *testing.T
	lines *bufio.Scanner
}

// next returns the next event's fields: id, event and data.
func (r sseReader) next() map[string]string {
	r.t.Helper()
	ev := map[string]string{}
	for r.lines.Scan() {
		line := r.lines.Text()
		if line == "" {
			if ev["event"] != "" {
				return ev
			}
			continue // a comment block
		}
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, ":") {
			ev[k] = v
		}
	}
	r.t.Fatal("stream ended")
	return nil
}

func (p *person) stream(room, cursor string, header ...string) sseReader {
	p.t.Helper()
	resp := p.get("/rooms/"+room+"/subscribe?transport=sse&since="+url.QueryEscape(cursor), header...)
	require.Equal(p.t, http.StatusOK, resp.StatusCode)
	require.Equal(p.t, "text/event-stream", resp.Header.Get("Content-Type"))
	return sseReader{p.t, bufio.NewScanner(resp.Body)}
}

// The event stream: repeated suspend cycles on one response, each event's
// id its cursor; a reconnect with Last-Event-ID resumes after it, and one
// with a cursor of another epoch gets a "missed" event first.
func TestEventStream(t *testing.T) {
	c := newChat(t)
	alice := c.person()
	alice.join("lobby", "alice")
	alice.say("lobby", "before")

	r := alice.stream("lobby", "")
	join := r.next()
	assert.Equal(t, "join", join["event"])
	assert.JSONEq(t, `"alice"`, mustField(t, join["data"], "nick"))
	before := r.next()
	assert.Equal(t, "message", before["event"])
	assert.Contains(t, before["data"], `"text":"before"`)
	alice.say("lobby", "live")
	live := r.next()
	assert.Contains(t, live["data"], `"text":"live"`)
	assert.NotEqual(t, before["id"], live["id"])

	alice.say("lobby", "while away")
	r = alice.stream("lobby", "", "Last-Event-ID", live["id"])
	assert.Contains(t, r.next()["data"], "while away")

	// A cursor from before a restart: a "missed" event carrying where to go
	// on from, then what the room has.
	r = alice.stream("lobby", "", "Last-Event-ID", "zzz-2")
	missed := r.next()
	assert.Equal(t, "missed", missed["event"])
	assert.Equal(t, "join", r.next()["event"])
	assert.Contains(t, r.next()["data"], `"text":"before"`)
}

func mustField(t *testing.T, data, field string) string {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(data), &m))
	return string(m[field])
}

func TestBadInput(t *testing.T) {
	c := newChat(t)
	al := c.person()
	al.join("a", "al")
	long := strings.Repeat("x", maxMessage+1)
	tests := []struct {
		name   string
		resp   func() *http.Response
		code   int
		reason string
	}{
		{"bad room", func() *http.Response { return al.get("/rooms/Bad!/members") }, 400, "bad room name"},
		{"room too long", func() *http.Response { return al.get("/rooms/" + strings.Repeat("a", 33) + "/members") }, 400, "bad room name"},
		{"empty nick", func() *http.Response { return al.post("/rooms/a/join", url.Values{"nick": {" "}}) }, 400, "bad nickname"},
		{"nick with markup", func() *http.Response { return al.post("/rooms/a/join", url.Values{"nick": {"<b>"}}) }, 400, "bad nickname"},
		{"Cyrillic а in alice", func() *http.Response { return al.post("/rooms/a/join", url.Values{"nick": {"аlice"}}) }, 400, "bad nickname"},
		{"zero-width space in a nick", func() *http.Response { return al.post("/rooms/a/join", url.Values{"nick": {"ali\u200bce"}}) }, 400, "bad nickname"},
		{"combining accent in a nick", func() *http.Response { return al.post("/rooms/a/join", url.Values{"nick": {"alice\u0301"}}) }, 400, "bad nickname"},
		{"empty message", func() *http.Response { return al.post("/rooms/a/messages", url.Values{"text": {"  "}}) }, 400, "empty message"},
		{"oversized message", func() *http.Response { return al.post("/rooms/a/messages", url.Values{"text": {long}}) }, 400, "message too long"},
		{"invalid UTF-8", func() *http.Response { return al.post("/rooms/a/messages", url.Values{"text": {"\xff"}}) }, 400, "message is not valid UTF-8"},
		{"10 MB body", func() *http.Response {
			return al.post("/rooms/a/messages", url.Values{"text": {strings.Repeat("x", 10<<20)}})
		}, 413, "request too large"},
		{"cursor beyond uint64", func() *http.Response { return al.get("/rooms/a/subscribe?since=18446744073709551616") }, 400, "bad cursor"},
		{"bad cursor", func() *http.Response { return al.get("/rooms/a/subscribe?since=abc") }, 400, "bad cursor"},
		{"negative cursor", func() *http.Response { return al.get("/rooms/a/subscribe?since=-1") }, 400, "bad cursor"},
		{"bad Last-Event-ID", func() *http.Response {
			return al.get("/rooms/a/subscribe?transport=sse", "Last-Event-ID", "x")
		}, 400, "bad cursor"},
		{"unknown transport", func() *http.Response { return al.get("/rooms/a/subscribe?transport=ws") }, 400, "unknown transport"},
		{"method not allowed", func() *http.Response { return al.get("/rooms/a/join") }, 405, ""},
		{"post without a session", func() *http.Response {
			return c.person().post("/rooms/a/messages", url.Values{"text": {"hi"}})
		}, 401, "session expired or invalid"},
		{"leave without a session", func() *http.Response { return c.person().post("/rooms/a/leave", nil) }, 401, "session expired or invalid"},
		{"public metrics", func() *http.Response { return al.get("/metrics") }, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.resp()
			assert.Equal(t, tt.code, resp.StatusCode)
			assert.True(t, strings.HasPrefix(body(t, resp), tt.reason))
		})
	}
}

// Shutdown answers every waiting client: polls with no events, streams
// end.
func TestShutdownAnswersWaitingClients(t *testing.T) {
	c := newChat(t, pollTimeout(time.Hour))
	p := c.person()
	poll := make(chan answer)
	go func() { poll <- p.poll("lobby", "") }()
	stream := p.get("/rooms/lobby/subscribe?transport=sse")
	require.Eventually(t, func() bool { return c.s.mgr.Count("room:lobby") == 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, c.s.mw.Shutdown(t.Context()))
	assert.Empty(t, (<-poll).Events)
	_, err := io.ReadAll(stream.Body) // ends, rather than hangs
	assert.NoError(t, err)
}

func TestPageAndOps(t *testing.T) {
	c := newChat(t)
	assert.NoError(t, middleware.Check(c.s.handler.(chi.Routes)), "the chat's middleware order")
	p := c.person()
	page := p.get("/")
	assert.Equal(t, http.StatusOK, page.StatusCode)
	assert.Contains(t, body(t, page), `<script src="/app.js">`)
	assert.Equal(t, "ok\n", body(t, p.get("/healthz")))
}
