package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/hub"
	"github.com/cometkit/cometkit/sse"
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

// testConfig is the default settings, but a poll timeout and a presence
// interval of a minute and joins limited only per room, changed by set.
func testConfig(set ...func(*config)) config {
	cfg := defaults()
	cfg.pollTimeout, cfg.presence, cfg.joinRate = time.Minute, time.Minute, 1000
	for _, f := range set {
		f(&cfg)
	}
	return cfg
}

// startServer starts a chat server, shut down and closed at the end of t.
func startServer(t *testing.T, cfg config) *server {
	t.Helper()
	s, err := newServer(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		s.hub.Shutdown(context.Background())
		s.Close()
	})
	return s
}

func pollTimeout(d time.Duration) func(*config) { return func(c *config) { c.pollTimeout = d } }

func presence(d time.Duration) func(*config) { return func(c *config) { c.presence = d } }

// A person is a client with its own cookies, so its own session, talking
// to a chat server (any node of several: cookies do not depend on ports).
type person struct {
	t      *testing.T
	base   string
	client *http.Client
	header []string // sent with every request: names and values
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

// with is the same person sending these headers too (names and values).
func (p *person) with(header ...string) *person {
	q := *p
	q.header = header
	return &q
}

func (p *person) do(req *http.Request) *http.Response {
	p.t.Helper()
	resp, err := p.client.Do(req)
	require.NoError(p.t, err)
	p.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (p *person) send(method, path, contentType string, body io.Reader, header ...string) *http.Response {
	p.t.Helper()
	req, _ := http.NewRequestWithContext(p.t.Context(), method, p.base+path, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	header = append(header, p.header...)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return p.do(req)
}

func (p *person) post(path string, fields url.Values, header ...string) *http.Response {
	p.t.Helper()
	return p.send(http.MethodPost, path, "application/x-www-form-urlencoded", strings.NewReader(fields.Encode()), header...)
}

func (p *person) get(path string, header ...string) *http.Response {
	p.t.Helper()
	return p.send(http.MethodGet, path, "", nil, header...)
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

type joined struct {
	Nick    string   `json:"nick"`
	Topic   string   `json:"topic"`
	Cursor  string   `json:"cursor"`
	History []event  `json:"history"`
	Members []string `json:"members"`
	RenewMs int64    `json:"renew_ms"`
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

// here renews the person's presence in the room, and returns the status.
func (p *person) here(room string) int {
	p.t.Helper()
	return p.post("/rooms/"+room+"/here", nil).StatusCode
}

func (p *person) members(room string) []string {
	p.t.Helper()
	return decode[[]string](p.t, p.get("/rooms/"+room+"/members"))
}

// A frame is a frame of the hub's wire format (docs/hub.md).
type frame struct {
	Type    string `json:"type"`
	Topic   string `json:"topic"`
	Cursor  string `json:"cursor"`
	Data    string `json:"data"`
	Code    string `json:"code"`
	Message string `json:"message"`
	RetryMs int64  `json:"retry_ms"`
}

// longPoll posts client frames to the hub and returns the status and the
// frames answered.
func (p *person) longPoll(frames ...any) (int, []frame) {
	p.t.Helper()
	b, err := json.Marshal(frames)
	require.NoError(p.t, err)
	resp := p.send(http.MethodPost, "/hub/?v=1", "application/json", strings.NewReader(string(b)))
	var answer []frame
	require.NoError(p.t, json.NewDecoder(resp.Body).Decode(&answer))
	return resp.StatusCode, answer
}

type op map[string]any

func subscribe(room, cursor string) op {
	return op{"op": "subscribe", "topic": topicOf(room), "cursor": cursor}
}

// say posts a message through the hub, and returns "published" or the
// code of the hub's refusal.
func (p *person) say(room, text string) string {
	p.t.Helper()
	status, frames := p.longPoll(op{"op": "publish", "topic": topicOf(room), "data": text, "id": 1})
	require.Equal(p.t, http.StatusOK, status)
	require.Len(p.t, frames, 1)
	if frames[0].Type == "published" {
		return "published"
	}
	return frames[0].Code
}

// answer is what a long-poll of one room brought: its events, whether they
// follow the cursor without a gap, and the cursor to poll with next.
type answer struct {
	Events   []event
	Complete bool
	Next     string
}

// poll long-polls the room's topic from cursor ("0": from the start).
func (p *person) poll(room, cursor string) answer {
	p.t.Helper()
	status, frames := p.longPoll(subscribe(room, cursor))
	require.Equal(p.t, http.StatusOK, status)
	return answerOf(p.t, frames, cursor)
}

func answerOf(t *testing.T, frames []frame, cursor string) answer {
	t.Helper()
	a := answer{Events: []event{}, Complete: true, Next: cursor}
	for _, f := range frames {
		switch f.Type {
		case "missed":
			a.Complete = false
		case "message":
			var ev event
			require.NoError(t, json.Unmarshal([]byte(f.Data), &ev), f.Data)
			a.Events = append(a.Events, ev)
		case "subscribed":
		default:
			t.Fatalf("a poll answered %+v", f)
		}
		a.Next = f.Cursor
	}
	return a
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
	assert.Equal(t, "room:lobby", j.Topic)
	assert.NotEmpty(t, j.Cursor)
	assert.Equal(t, []string{"alice"}, j.Members)
	assert.Equal(t, []string{"join:alice:"}, texts(j.History))
	assert.Equal(t, time.Minute.Milliseconds(), j.RenewMs)

	polled := make(chan answer)
	go func() { polled <- bob.poll("lobby", j.Cursor) }()
	require.Eventually(t, func() bool { return c.s.mgr.Count("room:lobby") == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, "published", alice.say("lobby", "<script>alert(1)</script>"))
	a := <-polled
	assert.True(t, a.Complete)
	assert.Equal(t, []string{"message:alice:<script>alert(1)</script>"}, texts(a.Events))
	assert.False(t, a.Events[0].Time.IsZero(), "an event carries its time")

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

// -timeout is how long the hub's long-polls wait.
func TestLongPollTimeout(t *testing.T) {
	c := newChat(t, pollTimeout(50*time.Millisecond))
	p := c.person()
	now := p.poll("quiet", "") // from now: answered at once, with where now is
	a := p.poll("quiet", now.Next)
	assert.Empty(t, a.Events)
	assert.True(t, a.Complete)
	assert.Equal(t, now.Next, a.Next)
}

// sseReader reads the hub's event stream one event at a time.
type sseReader struct {
	t      *testing.T
	events *sse.Reader
}

// next returns the next event that is not a ping: its id, its type and
// its frame.
func (r sseReader) next() (id, typ string, f frame) {
	r.t.Helper()
	for {
		ev, err := r.events.Next()
		require.NoError(r.t, err, "the stream ended")
		if ev.Type != "ping" {
			require.NoError(r.t, json.Unmarshal(ev.Data, &f))
			return ev.ID, ev.Type, f
		}
	}
}

// nextEvent returns the next chat event of the stream, and its id.
func (r sseReader) nextEvent() (id string, ev event) {
	r.t.Helper()
	id, typ, f := r.next()
	require.Equal(r.t, "message", typ, "%+v", f)
	require.NoError(r.t, json.Unmarshal([]byte(f.Data), &ev))
	return id, ev
}

// stream opens the hub's event stream of the room from cursor.
func (p *person) stream(room, cursor string, header ...string) sseReader {
	p.t.Helper()
	q := url.Values{"topic": {topicOf(room)}, "cursors": {cursor}, "v": {"1"}}
	resp := p.get("/hub/?"+q.Encode(), append([]string{"Accept", "text/event-stream"}, header...)...)
	require.Equal(p.t, http.StatusOK, resp.StatusCode)
	require.Equal(p.t, "text/event-stream", resp.Header.Get("Content-Type"))
	return sseReader{p.t, sse.NewReader(resp.Body)}
}

// The hub's event stream of a room: each event's id is its cursor; a
// reconnection with Last-Event-ID resumes after it, and one with a cursor
// of another epoch gets "missed" first.
func TestEventStream(t *testing.T) {
	c := newChat(t)
	alice := c.person()
	alice.join("lobby", "alice")
	alice.say("lobby", "before")

	r := alice.stream("lobby", "0")
	_, typ, _ := r.next()
	assert.Equal(t, "subscribed", typ)
	_, join := r.nextEvent()
	assert.Equal(t, event{Type: "join", Nick: "alice", Time: join.Time}, join)
	_, before := r.nextEvent()
	assert.Equal(t, "before", before.Text)
	alice.say("lobby", "live")
	liveID, live := r.nextEvent()
	assert.Equal(t, "live", live.Text)

	alice.say("lobby", "while away")
	r = alice.stream("lobby", "", "Last-Event-ID", liveID)
	r.next() // subscribed
	_, away := r.nextEvent()
	assert.Equal(t, "while away", away.Text)

	// A cursor from before a restart: "missed", then what the room has.
	r = alice.stream("lobby", "", "Last-Event-ID", "zzz-2")
	r.next() // subscribed
	_, typ, _ = r.next()
	assert.Equal(t, "missed", typ)
	_, ev := r.nextEvent()
	assert.Equal(t, "join", ev.Type)
}

func TestBadInput(t *testing.T) {
	c := newChat(t, func(c *config) { c.postRate = 1000 }) // refusals for what is sent, not how often
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
		{"10 MB join", func() *http.Response {
			return al.post("/rooms/a/join", url.Values{"nick": {strings.Repeat("x", 10<<20)}})
		}, 413, "request too large"},
		{"10 MB to the hub", func() *http.Response {
			return al.send(http.MethodPost, "/hub/", "application/json", strings.NewReader(strings.Repeat(" ", 10<<20)))
		}, 413, `[{"type":"error","code":"too_large"`},
		{"method not allowed", func() *http.Response { return al.get("/rooms/a/join") }, 405, ""},
		{"here without a session", func() *http.Response { return c.person().post("/rooms/a/here", nil) }, 401, "session expired or invalid"},
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

	// What a page publishes is a message's text, which the chat checks;
	// each refusal says why.
	publish := func(data string, encoding ...string) frame {
		f := op{"op": "publish", "topic": "room:a", "data": data, "id": 1}
		if len(encoding) > 0 {
			f["encoding"] = encoding[0]
		}
		status, frames := al.longPoll(f)
		require.Equal(t, http.StatusOK, status)
		require.Len(t, frames, 1)
		return frames[0]
	}
	for data, reason := range map[string]string{
		"  ": "empty message",
		long: "message too long: at most 1000 characters",
		"\a": "message has control characters",
	} {
		assert.Equal(t, frame{Type: "error", Topic: "room:a", Code: "rejected", Message: reason}, publish(data))
	}
	assert.Equal(t, "message is not valid UTF-8", publish("/w==", "base64").Message, "\xff, in base64")
	for _, topic := range []string{"lobby", "room:Bad!", "room:"} {
		_, frames := al.longPoll(op{"op": "publish", "topic": topic, "data": "hi"})
		assert.Equal(t, "forbidden", frames[0].Code, "a publish on %q", topic)
		_, frames = al.longPoll(subscribe("x", ""), op{"op": "subscribe", "topic": topic})
		assert.Equal(t, []string{"subscribed", "error"}, []string{frames[0].Type, frames[1].Type}, "a subscription to %q", topic)
		assert.Equal(t, "forbidden", frames[1].Code)
	}
	_, frames := c.person().longPoll(op{"op": "publish", "topic": "room:a", "data": "hi"})
	assert.Equal(t, "forbidden", frames[0].Code, "a publish without a session")
	_, frames = al.longPoll(subscribe("a", "abc"))
	assert.Equal(t, "bad_request", frames[0].Code, "a cursor the hub did not make")
}

// The hub's Drain, which the server's shutdown runs, answers every waiting
// client: long-polls answer, streams end, WebSockets close with 1001.
func TestShutdownAnswersWaitingClients(t *testing.T) {
	c := newChat(t, pollTimeout(time.Hour))
	p := c.person()
	now := p.poll("lobby", "")
	poll := make(chan answer)
	go func() { poll <- p.poll("lobby", now.Next) }()
	stream := p.stream("lobby", "")
	ws := c.dial(t)
	require.NoError(t, ws.Write(t.Context(), websocket.MessageText, []byte(`{"op":"subscribe","topic":"room:lobby"}`)))
	require.Eventually(t, func() bool { return c.s.mgr.Count("room:lobby") == 3 }, 10*time.Second, time.Millisecond)

	require.NoError(t, c.s.hub.Shutdown(t.Context()))
	assert.Empty(t, (<-poll).Events)
	for { // ends, rather than hangs
		if _, err := stream.events.Next(); err != nil {
			assert.ErrorIs(t, err, io.EOF, "a clean end")
			break
		}
	}
	for {
		if _, _, err := ws.Read(t.Context()); err != nil {
			assert.Equal(t, websocket.StatusCode(hub.CloseGoingAway), websocket.CloseStatus(err))
			break
		}
	}
}

// dial opens a WebSocket to the chat's hub.
func (c *chat) dial(t *testing.T) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.ts.URL, "http")+"/hub/",
		&websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func TestPageAndOps(t *testing.T) {
	c := newChat(t)
	p := c.person()
	page := p.get("/")
	assert.Equal(t, http.StatusOK, page.StatusCode)
	assert.Contains(t, body(t, page), `<script type="module" src="/app.js">`)
	assert.Equal(t, "ok\n", body(t, p.get("/healthz")))
	for path, contentType := range map[string]string{
		"/favicon.ico":     "image/",
		"/app.js":          "javascript",
		"/hub/client.js":   "javascript",
		"/style.css":       "text/css",
		"/rooms/a/members": "application/json",
	} {
		resp := p.get(path)
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Contains(t, resp.Header.Get("Content-Type"), contentType, path)
	}
	assert.Contains(t, body(t, p.get("/app.js")), `from "/hub/client.js"`, "the page uses the hub's client")
}

// A setting that cannot be meant stops the command, naming its flag.
func TestSettingsChecked(t *testing.T) {
	for flag, set := range map[string]func(*config){
		"-timeout":            pollTimeout(0),
		"-presence":           presence(-time.Second),
		"-max-conns-per-addr": func(c *config) { c.maxConnsPerAddr = 0 },
		"-max-rooms":          func(c *config) { c.maxRooms = clientmgr.DefaultMaxTopics },
		"-history":            func(c *config) { c.history = 0 },
		"-post-rate":          func(c *config) { c.postRate = 0 },
		"-write-timeout":      func(c *config) { c.writeTimeout = 0 },
	} {
		assert.ErrorContains(t, testConfig(set).check(), flag)
	}
	assert.NoError(t, defaults().check())
}

// A room that a subscription makes costs what a join costs: a client
// naming made-up rooms makes as many as its joins allow (here a burst of
// three), not the node's thousand; rooms that exist are open to it.
func TestSubscriptionsMakeRoomsAsJoinsDo(t *testing.T) {
	c := newChat(t, func(cfg *config) { cfg.joinRate = 1 })
	c.person().join("lobby", "ann") // a room that exists; the join takes one of the address's three
	visitor := c.person()
	var ops []any
	for i := range 10 {
		ops = append(ops, subscribe(fmt.Sprintf("made-up-%d", i), ""))
	}
	status, frames := visitor.longPoll(ops...)
	require.Equal(t, http.StatusOK, status)
	var made, refused int
	for _, f := range frames {
		switch {
		case f.Type == "subscribed":
			made++
		case f.Code == "forbidden":
			refused++
		}
	}
	assert.Equal(t, burstOf(1)-1, made)
	assert.Equal(t, 10-made, refused)
	status, frames = visitor.longPoll(subscribe("lobby", ""))
	require.Equal(t, http.StatusOK, status)
	require.Len(t, frames, 1)
	assert.Equal(t, "subscribed", frames[0].Type, "a room that exists")
}
