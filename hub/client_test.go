package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/hub"
)

// transports are the client's names for the hub's transports.
var transports = []string{"websocket", "sse", "longpoll"}

// A clientEvent is one line of testdata/node/client.mjs: something the
// hub's own client told the page.
type clientEvent struct {
	Event     string      `json:"event"`
	State     string      `json:"state"`
	Transport string      `json:"transport"`
	Final     bool        `json:"final"`
	Status    int         `json:"status"`
	CloseCode int         `json:"closeCode"`
	Frame     serverFrame `json:"frame"`
	Ref       int         `json:"ref"`
	Code      string      `json:"code"`
	Topic     string      `json:"topic"`
	RetryMs   int64       `json:"retryMs"`
	RetryIn   *int        `json:"retryIn"` // in a state: the back-off before the next attempt
	Reason    string      `json:"reason"`
}

// A jsClient is client.js in Node, with the ws and eventsource packages
// and Node's fetch, forced to one transport.
type jsClient struct {
	t     *testing.T
	lines <-chan string
	stdin io.Writer
}

func (th *testHub) jsClient(transport string, args ...string) *jsClient {
	th.t.Helper()
	lines, stdin := node(th.t, "client.mjs", append([]string{th.url(), transport}, args...)...)
	return &jsClient{t: th.t, lines: lines, stdin: stdin}
}

// do sends the client a command (see client.mjs).
func (c *jsClient) do(cmd map[string]any) {
	c.t.Helper()
	b, err := json.Marshal(cmd)
	require.NoError(c.t, err)
	_, err = c.stdin.Write(append(b, '\n'))
	require.NoError(c.t, err)
}

func (c *jsClient) next() clientEvent {
	c.t.Helper()
	var ev clientEvent
	line := nextLine(c.t, c.lines)
	require.NoError(c.t, json.Unmarshal([]byte(line), &ev), line)
	return ev
}

// until reads events until one matches, and returns the ones before it.
func (c *jsClient) until(match func(clientEvent) bool) (clientEvent, []clientEvent) {
	c.t.Helper()
	var before []clientEvent
	for {
		ev := c.next()
		if match(ev) {
			return ev, before
		}
		before = append(before, ev)
	}
}

func (c *jsClient) untilState(state string) []clientEvent {
	c.t.Helper()
	_, before := c.until(func(ev clientEvent) bool { return ev.Event == "state" && ev.State == state })
	return before
}

// messages reads events until the message with data last, and returns the
// messages and missed notices on the way: "missed", or a message's data.
func (c *jsClient) messages(last string) []string {
	c.t.Helper()
	var got []string
	for {
		ev := c.next()
		switch {
		case ev.Event == "missed":
			got = append(got, "missed")
		case ev.Event == "message":
			got = append(got, ev.Frame.Data)
			if ev.Frame.Data == last {
				return got
			}
		}
	}
}

func isEvent(name string) func(clientEvent) bool {
	return func(ev clientEvent) bool { return ev.Event == name }
}

// The hub's client in Node, over each transport: typed events, publish
// with acknowledgements, a state that follows the connection, resuming
// from its cursor after a break without a gap or a duplicate, and
// "missed" when the gap is longer than the history.
func TestClientInNode(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			mgr := clientmgr.New(clientmgr.WithHistory(4))
			t.Cleanup(func() { mgr.Close() })
			// A long poll timeout: the state must turn "connected" long
			// before a long-poll with nothing to say would answer.
			th := newHub(t, mgr, hub.WithAuthorizer(allowPublish("node")), hub.WithPollTimeout(time.Minute))
			c := th.jsClient(transport)
			c.untilState("connected")
			c.do(map[string]any{"op": "subscribe", "topic": "room:a"})
			sub, _ := c.until(isEvent("subscribed"))
			assert.NotEmpty(t, sub.Frame.Cursor)

			th.publish("room:a", "one")
			th.publish("room:a", "two")
			assert.Equal(t, []string{"one", "two"}, c.messages("two"))

			// A publish is acknowledged with its cursor; a refused one
			// rejects with the hub's code.
			c.do(map[string]any{"op": "publish", "topic": "room:a", "data": "from node", "ref": 1})
			var ack, echo clientEvent
			for ack.Event == "" || echo.Event == "" {
				switch ev := c.next(); ev.Event {
				case "published":
					ack = ev
				case "message":
					echo = ev
				}
			}
			assert.Equal(t, 1, ack.Ref)
			assert.Equal(t, echo.Frame.Cursor, ack.Frame.Cursor, "the ack's cursor is the message's")
			assert.Equal(t, "from node", echo.Frame.Data)
			c.do(map[string]any{"op": "publish", "topic": "other", "data": "x", "ref": 2})
			refused, _ := c.until(isEvent("refused"))
			assert.Equal(t, clientEvent{Event: "refused", Ref: 2, Code: "forbidden"}, refused)

			// The connection breaks and messages are published meanwhile:
			// the client reconnects by itself and gets each once, in order.
			th.door.cut()
			th.publish("room:a", "three")
			th.publish("room:a", "four")
			var got, states []string
			for len(states) == 0 || states[len(states)-1] != "connected" {
				switch ev := c.next(); ev.Event {
				case "state":
					states = append(states, ev.State)
				case "message":
					got = append(got, ev.Frame.Data)
				}
			}
			assert.Contains(t, states, "reconnecting")
			th.publish("room:a", "five")
			assert.Equal(t, []string{"three", "four", "five"}, append(got, c.messages("five")...))

			// Away for longer than the history (four messages) reaches:
			// "missed", then what the history has.
			th.door.shut.Store(true)
			th.door.cut()
			for i := range 6 {
				th.publish("room:a", fmt.Sprint("gap", i))
			}
			th.door.shut.Store(false)
			assert.Equal(t, []string{"missed", "gap2", "gap3", "gap4", "gap5"}, c.messages("gap5"))

			c.do(map[string]any{"op": "close"})
		})
	}
}

// A client the hub refuses for good (the Authorizer says no: 4403, or 403)
// stops in state "offline", final, instead of trying again and again.
func TestClientStopsWhenRefused(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			var asked atomic.Int32
			th := newHub(t, nil, hub.WithAuthorizer(hub.AuthorizerFunc(func(*http.Request) (hub.Access, error) {
				asked.Add(1)
				return nil, fmt.Errorf("no")
			})))
			c := th.jsClient(transport)
			c.do(map[string]any{"op": "subscribe", "topic": "a"})
			ev, _ := c.until(func(ev clientEvent) bool { return ev.Event == "state" && ev.State == "offline" })
			assert.True(t, ev.Final, "%+v", ev)
			n := asked.Load()
			time.Sleep(500 * time.Millisecond) // twenty-five back-offs of this client's 20 ms
			assert.Equal(t, n, asked.Load(), "the client asked again")
			c.do(map[string]any{"op": "close"})
		})
	}
}

// The client tries a WebSocket, then an event stream, then long-polling,
// and keeps the first that works: behind a proxy that passes no WebSocket
// it streams; behind one that cannot stream either, it long-polls.
func TestClientFallsBack(t *testing.T) {
	for _, want := range transports {
		t.Run(want, func(t *testing.T) {
			th := newHub(t, nil)
			th.door.noWebSocket.Store(want != "websocket")
			th.door.noStreams.Store(want == "longpoll")
			c := th.jsClient("auto")
			c.do(map[string]any{"op": "subscribe", "topic": "a"})
			var used string
			for done := false; !done; {
				switch ev := c.next(); {
				case ev.Event == "state" && ev.State == "connected":
					used = ev.Transport
				case ev.Event == "subscribed":
					th.publish("a", "through "+want)
				case ev.Event == "message":
					assert.Equal(t, "through "+want, ev.Frame.Data)
					done = true
				}
			}
			// Kept: after a break it comes back on the same transport.
			th.door.cut()
			c.untilState("reconnecting")
			ev, _ := c.until(func(ev clientEvent) bool { return ev.Event == "state" && ev.State == "connected" })
			assert.Equal(t, []string{want, want}, []string{used, ev.Transport})
			c.do(map[string]any{"op": "close"})
		})
	}
}

// The client's back-off: a random wait within 20 ms × 2^attempt, at most
// 400 ms (this client's settings), and never less than the Retry-After the
// hub gave; 200 to 400 ms (half the longest to the longest) after too
// many connections (4029); and publishes that cannot be answered.
func TestClientBackOff(t *testing.T) {
	retries := func(c *jsClient, n int) []int64 {
		var waits []int64
		for len(waits) < n {
			if ev := c.next(); ev.Event == "state" && ev.RetryIn != nil {
				waits = append(waits, int64(*ev.RetryIn))
			}
		}
		return waits
	}
	t.Run("exponential, full jitter", func(t *testing.T) {
		th := newHub(t, nil)
		c := th.jsClient("websocket")
		c.untilState("connected")
		th.door.noWebSocket.Store(true) // a handshake refused says nothing a WebSocket can read
		th.door.cut()
		waits := retries(c, 6)
		for i, w := range waits {
			assert.LessOrEqual(t, w, min(int64(20)<<i, 400), "wait %d of %v", i, waits)
		}
		assert.NotEqual(t, []int64{waits[3], waits[3], waits[3]}, waits[3:], "random: %v", waits)
		th.door.noWebSocket.Store(false)
		c.untilState("connected")
	})
	for _, transport := range []string{"sse", "longpoll"} {
		t.Run("Retry-After over "+transport, func(t *testing.T) {
			th := newHub(t, nil)
			c := th.jsClient(transport)
			c.do(map[string]any{"op": "subscribe", "topic": "a"})
			c.untilState("connected")
			th.door.shut.Store(true) // 503, Retry-After: 1
			th.door.cut()
			for _, w := range retries(c, 2)[1:] { // the first follows the break itself
				assert.GreaterOrEqual(t, w, int64(1000))
			}
			th.door.shut.Store(false)
			c.untilState("connected")
		})
	}
	t.Run("too many connections", func(t *testing.T) {
		th := newHub(t, nil, hub.WithMaxConnsPerAddr(1))
		first := th.jsClient("websocket")
		first.untilState("connected")
		second := th.jsClient("websocket")
		ev, _ := second.until(func(ev clientEvent) bool { return ev.Event == "state" && ev.CloseCode == hub.CloseTooManyConnections })
		require.NotNil(t, ev.RetryIn)
		assert.GreaterOrEqual(t, *ev.RetryIn, 200)
		assert.LessOrEqual(t, *ev.RetryIn, 400)
	})
}

// A WebSocket or a stream that carries nothing, not even the hub's ping,
// for twice the ping interval the client expects is dead, whatever the
// socket says: the client drops it and connects again. (The hub pings
// every 25 s; this client expects one every 100 ms.)
func TestClientDropsSilentConnection(t *testing.T) {
	for _, transport := range []string{"websocket", "sse"} {
		t.Run(transport, func(t *testing.T) {
			th := newHub(t, nil)
			c := th.jsClient(transport, "100")
			c.do(map[string]any{"op": "subscribe", "topic": "a"})
			c.untilState("connected")
			connected := time.Now()
			ev, _ := c.until(func(ev clientEvent) bool { return ev.Event == "state" && ev.State == "reconnecting" })
			assert.Equal(t, "no ping from the hub", ev.Reason)
			assert.GreaterOrEqual(t, time.Since(connected), 200*time.Millisecond, "dropped before twice the ping interval")
			c.untilState("connected")
			c.do(map[string]any{"op": "close"})
		})
	}
}

// A publish sent on a WebSocket that breaks before the hub answers is
// rejected as unavailable: it may or may not have been published.
func TestClientPublishLost(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	th := newHub(t, nil, hub.WithAuthorizer(allowPublish("node")),
		hub.WithPublishHook(func(ctx context.Context, _ hub.Access, _ string, data []byte) ([]byte, error) {
			close(held)
			<-release
			return data, nil
		}))
	t.Cleanup(func() { close(release) }) // before the hub's shutdown, which waits for the hook
	c := th.jsClient("websocket")
	c.untilState("connected")
	c.do(map[string]any{"op": "publish", "topic": "room:a", "data": "held", "ref": 1})
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the publish did not reach the hook")
	}
	th.door.cut()
	ev, _ := c.until(isEvent("refused"))
	assert.Equal(t, clientEvent{Event: "refused", Ref: 1, Code: "unavailable"}, ev)
}
