package hub_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/hub"
)

// A subscription from a cursor gets what follows it, then what is
// published; one from "" gets only what is published after it.
func TestWebSocketSubscribeWithCursors(t *testing.T) {
	th := newHub(t, nil)
	first := th.publish("room:a", "one")
	th.publish("room:a", "two")
	th.publish("room:a", "three")

	c := th.mustDial()
	assert.Equal(t, hub.Subprotocol, c.conn.Subprotocol())
	c.send(`{"op":"subscribe","topic":"room:a","cursor":"` + first.Cursor().String() + `"}`)
	f := c.next()
	assert.Equal(t, serverFrame{Type: "subscribed", Topic: "room:a", Cursor: first.Cursor().String()}, f)
	for _, want := range []string{"two", "three"} {
		f := c.next()
		assert.Equal(t, "message", f.Type)
		assert.Equal(t, want, f.Data)
		assert.Equal(t, "room:a", f.Topic)
	}
	live := th.publish("room:a", "four")
	f = c.next()
	assert.Equal(t, "four", f.Data)
	assert.Equal(t, live.Cursor().String(), f.Cursor, "the cursor to resume from")
	assert.Equal(t, live.Seq, f.Seq)
	assert.Equal(t, strings.Split(live.Cursor().String(), "-")[0], f.Epoch)
	assert.WithinDuration(t, live.Time, f.Time, time.Millisecond)

	c.send(`{"op":"subscribe","topic":"room:b"}`)
	f = c.next()
	assert.Equal(t, "subscribed", f.Type)
	assert.Equal(t, "0", f.Cursor, "an empty topic stands at 0")
	th.publish("room:b", "b1")
	f = c.next()
	assert.Equal(t, "b1", f.Data)
	assert.Equal(t, "room:b", f.Topic)

	// Data that is not UTF-8 arrives in base64, marked.
	th.publish("room:b", "\xff\xfe")
	f = c.next()
	assert.Equal(t, "base64", f.Encoding)
	assert.Equal(t, "//4=", f.Data)
}

// After a restart (a new Manager: a new epoch) a cursor from before is
// not honoured: the client is told it missed messages, then gets what the
// new sequence has.
func TestWebSocketEpochChange(t *testing.T) {
	before := newHub(t, nil)
	old := before.publish("room:a", "before the restart")

	after := newHub(t, nil)
	m := after.publish("room:a", "after the restart")
	require.NotEqual(t, old.Epoch, m.Epoch)

	c := after.mustDial()
	c.send(`{"op":"subscribe","topic":"room:a","cursor":"` + old.Cursor().String() + `"}`)
	assert.Equal(t, "subscribed", c.next().Type)
	missed := c.next()
	assert.Equal(t, "missed", missed.Type)
	assert.Equal(t, clientmgr.Cursor{Epoch: m.Epoch, Seq: 0}.String(), missed.Cursor, "just before the new sequence's first message")
	f := c.next()
	assert.Equal(t, "after the restart", f.Data)
	assert.Equal(t, m.Cursor().String(), f.Cursor)
}

// A cursor older than the history reaches: missed, then what is kept.
func TestWebSocketMissedBeyondHistory(t *testing.T) {
	mgr := clientmgr.New(clientmgr.WithHistory(2))
	t.Cleanup(func() { mgr.Close() })
	th := newHub(t, mgr)
	first := th.publish("t", "1")
	for _, d := range []string{"2", "3", "4", "5"} {
		th.publish("t", d)
	}
	c := th.mustDial()
	c.send(`{"op":"subscribe","topic":"t","cursor":"` + first.Cursor().String() + `"}`)
	assert.Equal(t, "subscribed", c.next().Type)
	missed := c.next()
	assert.Equal(t, "missed", missed.Type)
	assert.Equal(t, clientmgr.Cursor{Epoch: first.Epoch, Seq: 3}.String(), missed.Cursor)
	assert.Equal(t, "4", c.next().Data)
	assert.Equal(t, "5", c.next().Data)
}

func TestWebSocketUnsubscribe(t *testing.T) {
	th := newHub(t, nil)
	c := th.mustDial()
	c.send(`{"op":"subscribe","topic":"a"}`)
	c.send(`{"op":"subscribe","topic":"b"}`)
	assert.Equal(t, "subscribed", c.next().Type)
	assert.Equal(t, "subscribed", c.next().Type)
	c.send(`{"op":"unsubscribe","topic":"a"}`)
	assert.Equal(t, serverFrame{Type: "unsubscribed", Topic: "a"}, c.next())
	th.publish("a", "not for us any more")
	th.publish("b", "for us")
	f := c.next()
	assert.Equal(t, "for us", f.Data, "nothing of a after its unsubscribed")
	waitFor(t, "a's subscription to end", func() bool { return th.mgr.Count("a") == 0 })
}

func TestWebSocketPing(t *testing.T) {
	th := newHub(t, nil)
	c := th.mustDial()
	c.send(`{"op":"ping"}`)
	assert.Equal(t, serverFrame{Type: "pong"}, c.next())
}

func allowPublish(id string) hub.Authorizer {
	return hub.AuthorizerFunc(func(*http.Request) (hub.Access, error) {
		return hub.Grant{ID: id, Publish: func(topic string) bool { return strings.HasPrefix(topic, "room:") }}, nil
	})
}

// Without an Authorizer every publish is refused; with one, what it allows
// is published, through the hook.
func TestWebSocketPublish(t *testing.T) {
	t.Run("denied by default", func(t *testing.T) {
		th := newHub(t, nil)
		c := th.mustDial()
		c.send(`{"op":"publish","topic":"room:a","data":"hi","id":7}`)
		f := c.next()
		assert.Equal(t, "error", f.Type)
		assert.Equal(t, "forbidden", f.Code)
		assert.JSONEq(t, "7", string(f.ID))
		head, err := th.mgr.Head(context.Background(), "room:a")
		require.NoError(t, err)
		assert.Zero(t, head.Seq, "nothing was published")
	})
	t.Run("allowed, and changed by the hook", func(t *testing.T) {
		th := newHub(t, nil, hub.WithAuthorizer(allowPublish("ann")),
			hub.WithPublishHook(func(_ context.Context, a hub.Access, topic string, data []byte) ([]byte, error) {
				if string(data) == "spam" {
					return nil, errors.New("no spam here")
				}
				return []byte(a.Identity() + ": " + string(data)), nil
			}))
		reader, writer := th.mustDial(), th.mustDial()
		reader.send(`{"op":"subscribe","topic":"room:a"}`)
		assert.Equal(t, "subscribed", reader.next().Type)

		writer.send(`{"op":"publish","topic":"room:a","data":"hello","id":"x1"}`)
		ack := writer.next()
		assert.Equal(t, "published", ack.Type)
		assert.JSONEq(t, `"x1"`, string(ack.ID))
		got := reader.next()
		assert.Equal(t, "ann: hello", got.Data)
		assert.Equal(t, ack.Cursor, got.Cursor)

		writer.send(`{"op":"publish","topic":"room:a","data":"spam","id":2}`)
		f := writer.next()
		assert.Equal(t, "rejected", f.Code)
		assert.Equal(t, "no spam here", f.Message)

		writer.send(`{"op":"publish","topic":"news","data":"hi","id":3}`)
		assert.Equal(t, "forbidden", writer.next().Code, "the Authorizer allows room:* only")

		writer.send(`{"op":"publish","topic":"room:a","data":"aGk=","encoding":"base64","id":4}`)
		assert.Equal(t, "published", writer.next().Type)
		assert.Equal(t, "ann: hi", reader.next().Data)
		assert.Equal(t, float64(1), th.metric("cometkit_hub_refusals_total", "reason", "rejected"))
	})
}

// The Authorizer sees the handshake: a refusal is an error frame and the
// close code 4403; a topic it forbids is an error frame, and the
// connection goes on.
func TestWebSocketAuthorizer(t *testing.T) {
	th := newHub(t, nil, hub.WithAuthorizer(hub.AuthorizerFunc(func(r *http.Request) (hub.Access, error) {
		if r.URL.Query().Get("token") != "good" {
			return nil, errors.New("bad token")
		}
		return hub.Grant{Subscribe: func(topic string) bool { return topic != "secret" }}, nil
	})))
	bad, _, err := th.dial(nil)
	require.NoError(t, err)
	code, frames := bad.closed()
	assert.Equal(t, websocket.StatusCode(hub.CloseForbidden), code)
	require.Len(t, frames, 1)
	assert.Equal(t, "forbidden", frames[0].Code)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(th.url(), "http")+"?token=good", nil)
	require.NoError(t, err)
	defer conn.CloseNow()
	c := &wsClient{t: t, conn: conn}
	c.send(`{"op":"subscribe","topic":"secret"}`)
	f := c.next()
	assert.Equal(t, serverFrame{Type: "error", Topic: "secret", Code: "forbidden", Message: f.Message}, f)
	c.send(`{"op":"subscribe","topic":"open"}`)
	assert.Equal(t, "subscribed", c.next().Type, "the connection goes on")
	assert.Equal(t, float64(2), th.metric("cometkit_hub_refusals_total", "reason", "forbidden"))
}

// Frames the hub cannot read end their connection with bad_request and
// 4400 (1003 for binary); the hub's other clients notice nothing.
func TestWebSocketMalformedFrames(t *testing.T) {
	th := newHub(t, nil)
	bystander := th.mustDial()
	bystander.send(`{"op":"subscribe","topic":"t"}`)
	require.Equal(t, "subscribed", bystander.next().Type)

	for _, tt := range []struct {
		name, frame string
		binary      bool
		code        websocket.StatusCode
	}{
		{"not JSON", `{"op":`, false, hub.CloseBadRequest},
		{"not an object", `[1,2]`, false, hub.CloseBadRequest},
		{"unknown op", `{"op":"launch"}`, false, hub.CloseBadRequest},
		{"no op", `{"topic":"t"}`, false, hub.CloseBadRequest},
		{"subscribe without a topic", `{"op":"subscribe"}`, false, hub.CloseBadRequest},
		{"a topic of the wrong type", `{"op":"subscribe","topic":7}`, false, hub.CloseBadRequest},
		{"publish without data", `{"op":"publish","topic":"t"}`, false, hub.CloseBadRequest},
		{"an id that is an object", `{"op":"publish","topic":"t","data":"","id":{}}`, false, hub.CloseBadRequest},
		{"binary", `{"op":"ping"}`, true, hub.CloseUnsupportedData},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := th.mustDial()
			typ := websocket.MessageText
			if tt.binary {
				typ = websocket.MessageBinary
			}
			require.NoError(t, c.conn.Write(context.Background(), typ, []byte(tt.frame)))
			code, frames := c.closed()
			assert.Equal(t, tt.code, code)
			require.Len(t, frames, 1)
			assert.Equal(t, "bad_request", frames[0].Code)
			assert.NotEmpty(t, frames[0].Message)
		})
	}
	// Readable frames that ask for something wrong get an error, and the
	// connection goes on.
	c := th.mustDial()
	c.send(`{"op":"subscribe","topic":"t","cursor":"not-a-cursor"}`)
	assert.Equal(t, "bad_request", c.next().Code)
	c.send(`{"op":"subscribe","topic":"bad\u0001topic"}`)
	assert.Equal(t, "bad_request", c.next().Code)
	c.send(`{"op":"ping","future_field":true}`)
	assert.Equal(t, "pong", c.next().Type, "unknown fields are ignored")

	th.publish("t", "still here")
	assert.Equal(t, "still here", bystander.next().Data)
}

// The version is the subprotocol: one the hub does not speak is refused
// before the upgrade; none at all is version 1.
func TestWebSocketVersion(t *testing.T) {
	th := newHub(t, nil)
	_, resp, err := th.dial(&websocket.DialOptions{Subprotocols: []string{"cometkit-hub.v2"}})
	require.Error(t, err)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	c, _, err := th.dial(&websocket.DialOptions{Subprotocols: []string{"cometkit-hub.v2", hub.Subprotocol}})
	require.NoError(t, err)
	assert.Equal(t, hub.Subprotocol, c.conn.Subprotocol())

	c, _, err = th.dial(&websocket.DialOptions{})
	require.NoError(t, err)
	c.send(`{"op":"ping"}`)
	assert.Equal(t, "pong", c.next().Type)
}

func TestWebSocketOrigin(t *testing.T) {
	th := newHub(t, nil, hub.WithOrigins("https://app.example.com"))
	for origin, ok := range map[string]bool{
		"":                            true,
		th.srv.URL:                    true,
		"https://app.example.com":     true,
		"https://evil.example.com":    false,
		"http://app.example.com":      false, // another scheme is another origin
		"null":                        false,
		"https://app.example.com:444": false,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		_, resp, err := th.dial(&websocket.DialOptions{HTTPHeader: h})
		if ok {
			assert.NoError(t, err, origin)
		} else if assert.Error(t, err, origin) {
			assert.Equal(t, http.StatusForbidden, resp.StatusCode, origin)
		}
	}
	assert.Equal(t, float64(4), th.metric("cometkit_hub_refusals_total", "reason", "origin"))
}

// A client that does not answer pings is closed with 4000; one that does
// stays.
func TestWebSocketPingTimeout(t *testing.T) {
	th := newHub(t, nil, hub.WithPingInterval(30*time.Millisecond), hub.WithPingTimeout(100*time.Millisecond))
	silent := th.mustDial() // coder/websocket answers pings only while reading
	alive := th.mustDial()
	pings := 0
	for pings < 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, b, err := alive.conn.Read(ctx)
		cancel()
		require.NoError(t, err, "a client that answers pings stays connected")
		if decodeFrame(t, b).Type == "ping" {
			pings++
		}
	}
	code, _ := silent.closed()
	assert.Equal(t, websocket.StatusCode(hub.ClosePingTimeout), code)
}

// A client whose send queue overflows is closed with 4008 and never sent
// part of a message; one that stops reading is closed when a write takes
// longer than the write timeout.
func TestWebSocketSlowConsumer(t *testing.T) {
	t.Run("queue overflow", func(t *testing.T) {
		th := newHub(t, nil, hub.WithSendQueue(1024))
		for i := range 50 {
			th.publish("t", strings.Repeat("x", 100)+string(rune('a'+i%26)))
		}
		c := th.mustDial()
		c.send(`{"op":"subscribe","topic":"t","cursor":"0"}`) // 50 messages at once, 7 KB
		code, frames := c.closed()
		assert.Equal(t, websocket.StatusCode(hub.CloseSlowConsumer), code)
		for _, f := range frames {
			assert.NotEqual(t, "message", f.Type, "the overflowing batch is dropped whole")
		}
		assert.Equal(t, float64(1), th.metric("cometkit_hub_slow_consumers_total", "transport", "websocket"))
	})
	t.Run("a client that stops reading", func(t *testing.T) {
		th := newHub(t, nil, hub.WithWriteTimeout(100*time.Millisecond))
		c := th.mustDial()
		c.send(`{"op":"subscribe","topic":"t"}`)
		assert.Equal(t, "subscribed", c.next().Type)
		big := strings.Repeat("y", 60<<10)
		waitFor(t, "the hub to give up on the client", func() bool {
			th.publish("t", big) // until the socket buffers are full
			return th.metric("cometkit_hub_slow_consumers_total", "transport", "websocket") == 1
		})
		waitFor(t, "the connection to end", func() bool {
			return th.metric("cometkit_hub_connections", "transport", "websocket") == 0
		})
		assert.Zero(t, th.mgr.Count("t"), "its subscription ended")
	})
}

func TestWebSocketLimits(t *testing.T) {
	t.Run("topics per connection", func(t *testing.T) {
		th := newHub(t, nil, hub.WithMaxTopics(2))
		c := th.mustDial()
		for _, topic := range []string{"a", "b"} {
			c.send(`{"op":"subscribe","topic":"` + topic + `"}`)
			assert.Equal(t, "subscribed", c.next().Type)
		}
		c.send(`{"op":"subscribe","topic":"c"}`)
		f := c.next()
		assert.Equal(t, "too_many_topics", f.Code)
		assert.Equal(t, "c", f.Topic)
		c.send(`{"op":"subscribe","topic":"a","cursor":"0"}`)
		assert.Equal(t, "subscribed", c.next().Type, "subscribing again to a topic held is no new topic")
		c.send(`{"op":"unsubscribe","topic":"b"}`)
		assert.Equal(t, "unsubscribed", c.next().Type)
		c.send(`{"op":"subscribe","topic":"c"}`)
		assert.Equal(t, "subscribed", c.next().Type)
	})
	t.Run("message size", func(t *testing.T) {
		th := newHub(t, nil, hub.WithMaxMessageSize(100))
		c := th.mustDial()
		c.send(`{"op":"ping"}`)
		assert.Equal(t, "pong", c.next().Type)
		c.send(`{"op":"subscribe","topic":"` + strings.Repeat("t", 120) + `"}`)
		code, _ := c.closed()
		assert.Equal(t, websocket.StatusMessageTooBig, code)
		assert.Equal(t, float64(1), th.metric("cometkit_hub_refusals_total", "reason", "too_large"))
	})
	t.Run("publish rate", func(t *testing.T) {
		th := newHub(t, nil, hub.WithAuthorizer(allowPublish("bob")), hub.WithPublishRate(1, 2))
		c1, c2 := th.mustDial(), th.mustDial()
		c1.send(`{"op":"publish","topic":"room:a","data":"1","id":1}`)
		assert.Equal(t, "published", c1.next().Type)
		c2.send(`{"op":"publish","topic":"room:a","data":"2","id":2}`)
		assert.Equal(t, "published", c2.next().Type)
		c1.send(`{"op":"publish","topic":"room:a","data":"3","id":3}`)
		f := c1.next()
		assert.Equal(t, "rate_limited", f.Code, "one identity, one rate, across its connections")
		assert.Positive(t, f.RetryMs)
		assert.LessOrEqual(t, f.RetryMs, int64(1000))
	})
}

// A slow hook on one connection does not hold up another: each has its
// own goroutines.
func TestWebSocketPanicInHook(t *testing.T) {
	th := newHub(t, nil, hub.WithAuthorizer(allowPublish("")),
		hub.WithPublishHook(func(context.Context, hub.Access, string, []byte) ([]byte, error) { panic("the hook's bug") }))
	bystander := th.mustDial()
	bystander.send(`{"op":"subscribe","topic":"room:a"}`)
	require.Equal(t, "subscribed", bystander.next().Type)
	c := th.mustDial()
	c.send(`{"op":"publish","topic":"room:a","data":"x"}`)
	code, _ := c.closed()
	assert.Equal(t, websocket.StatusCode(hub.CloseInternalError), code)
	bystander.send(`{"op":"ping"}`)
	assert.Equal(t, "pong", bystander.next().Type)
}
