package hub_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/hub"
)

// Connections from one address are counted across transports, and long
// polls count while they wait.
func TestConnectionsPerAddress(t *testing.T) {
	th := newHub(t, nil, hub.WithMaxConnsPerAddr(2))
	ws := th.mustDial()
	ws.send(`{"op":"ping"}`)
	require.Equal(t, "pong", ws.next().Type)
	es := th.stream(url.Values{"topic": {"a"}}, "")
	require.Equal(t, "subscribed", es.mustNext().Type)

	refused := th.mustDial()
	code, frames := refused.closed()
	assert.Equal(t, websocket.StatusCode(hub.CloseTooManyConnections), code)
	require.Len(t, frames, 1)
	assert.Equal(t, "too_many_connections", frames[0].Code)
	status, frames := th.longPoll(`[{"op":"ping"}]`)
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "too_many_connections", frames[0].Code)

	es.close()
	waitFor(t, "the stream's connection to be let go", func() bool {
		return th.metric("cometkit_hub_connections", "transport", "sse") == 0
	})
	status, _ = th.longPoll(`[{"op":"ping"}]`)
	assert.Equal(t, http.StatusOK, status, "a place is free again")
	assert.Equal(t, float64(2), th.metric("cometkit_hub_refusals_total", "reason", "too_many_connections"))
}

// The address behind a trusted proxy is the one X-Forwarded-For names;
// from anyone else the header is ignored.
func TestTrustedProxies(t *testing.T) {
	th := newHub(t, nil, hub.WithMaxConnsPerAddr(1), hub.WithPollTimeout(time.Minute),
		hub.WithTrustedProxies(netip.MustParsePrefix("127.0.0.0/8")))
	waiting := make(chan int, 1)
	go func() {
		status, _ := th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"0"}]`, "X-Forwarded-For", "203.0.113.7")
		waiting <- status
	}()
	waitFor(t, "the poll to wait", func() bool { return th.mgr.Count("a") == 1 })
	status, _ := th.longPoll(`[{"op":"ping"}]`, "X-Forwarded-For", "203.0.113.7")
	assert.Equal(t, http.StatusTooManyRequests, status, "the same client behind the proxy")
	status, _ = th.longPoll(`[{"op":"ping"}]`, "X-Forwarded-For", "203.0.113.7:4711")
	assert.Equal(t, http.StatusTooManyRequests, status, "the same client, written with a port")
	for _, other := range []string{"203.0.113.8, 127.0.0.5", "203.0.113.8:4711", "[2001:db8::1]:443"} {
		status, _ = th.longPoll(`[{"op":"ping"}]`, "X-Forwarded-For", other)
		assert.Equal(t, http.StatusOK, status, "another client (%s); the proxy's own hop is skipped", other)
	}
	th.publish("a", "wake up")
	assert.Equal(t, http.StatusOK, <-waiting)

	untrusting := newHub(t, nil, hub.WithMaxConnsPerAddr(1), hub.WithPollTimeout(time.Minute))
	go func() {
		status, _ := untrusting.longPoll(`[{"op":"subscribe","topic":"a","cursor":"0"}]`, "X-Forwarded-For", "203.0.113.7")
		waiting <- status
	}()
	waitFor(t, "the poll to wait", func() bool { return untrusting.mgr.Count("a") == 1 })
	status, _ = untrusting.longPoll(`[{"op":"ping"}]`, "X-Forwarded-For", "203.0.113.99")
	assert.Equal(t, http.StatusTooManyRequests, status, "without trusted proxies the header is anyone's")
	untrusting.publish("a", "wake up")
	assert.Equal(t, http.StatusOK, <-waiting)
}

// Shutdown closes every WebSocket with 1001, ends the streams, answers the
// polls, refuses new requests, and returns once all is done.
func TestShutdown(t *testing.T) {
	mgr := clientmgr.New()
	defer mgr.Close()
	h := hub.New(mgr, hub.WithPollTimeout(time.Minute))
	srv := httptest.NewServer(h)
	defer srv.Close()
	th := &testHub{t: t, mgr: mgr, hub: h, srv: srv}
	wsURL := "ws" + srv.URL[len("http"):] + "/hub/"

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	require.NoError(t, err)
	ws := &wsClient{t: t, conn: conn}
	ws.send(`{"op":"subscribe","topic":"a"}`)
	require.Equal(t, "subscribed", ws.next().Type)
	es := th.stream(url.Values{"topic": {"a"}}, "")
	require.Equal(t, "subscribed", es.mustNext().Type)
	polled := make(chan []serverFrame, 1)
	go func() {
		_, frames := th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"0"}]`)
		polled <- frames
	}()
	waitFor(t, "every client to wait", func() bool { return mgr.Count("a") == 3 })

	wsClosed := make(chan websocket.StatusCode, 1)
	go func() { // a client that answers the close handshake, as browsers do
		code, _ := ws.closed()
		wsClosed <- code
	}()
	start := time.Now()
	require.NoError(t, h.Shutdown(ctx))
	assert.Less(t, time.Since(start), 4*time.Second, "no wait for a close handshake's timeout")
	assert.Equal(t, websocket.StatusGoingAway, <-wsClosed)
	_, ok := es.next()
	assert.False(t, ok, "the stream ended")
	assert.Empty(t, <-polled, "the poll answered, with nothing")
	assert.Zero(t, mgr.Count("a"), "nothing is left registered")

	resp, err := srv.Client().Post(srv.URL+"/hub/", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.NoError(t, h.Shutdown(ctx), "again")
}

// A hub given a Dispatcher serves through its pool and limits.
func TestWithDispatcher(t *testing.T) {
	d := continuation.NewDispatcher(http.NotFoundHandler(), continuation.WithMaxSuspended(1))
	th := newHub(t, nil, hub.WithDispatcher(d), hub.WithPollTimeout(time.Minute))
	waiting := make(chan struct{})
	go func() {
		defer close(waiting)
		th.longPoll(`[{"op":"subscribe","topic":"a","cursor":"0"}]`)
	}()
	continuationWait(t, d, 1)
	_, frames := th.longPoll(`[{"op":"subscribe","topic":"b","cursor":"0"}]`)
	require.Len(t, frames, 1)
	assert.Equal(t, "unavailable", frames[0].Code, "the Dispatcher's WithMaxSuspended holds")
	assert.Positive(t, frames[0].RetryMs)
	th.publish("a", "go")
	<-waiting
}

func continuationWait(t *testing.T, d *continuation.Dispatcher, n int) {
	t.Helper()
	waitFor(t, "requests to suspend", func() bool { return d.Suspended() >= n })
}

func TestClientScript(t *testing.T) {
	th := newHub(t, nil)
	resp, err := th.srv.Client().Get(th.url() + "client.js")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "javascript")
	assert.Contains(t, string(body), "export class Hub")
	assert.Contains(t, string(body), hub.Subprotocol)

	resp, err = th.srv.Client().Get(th.url())
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "a GET that is neither a WebSocket nor a stream")
}

func TestOptionsPanic(t *testing.T) {
	mgr := clientmgr.New()
	defer mgr.Close()
	for name, opt := range map[string]hub.Option{
		"hub: WithMaxTopics(0): must be at least 1":                                     hub.WithMaxTopics(0),
		"hub: WithSendQueue(-1): must be at least 1":                                    hub.WithSendQueue(-1),
		"hub: WithPingInterval(0s): must be more than 0":                                hub.WithPingInterval(0),
		"hub: WithPublishRate(0, 1): the rate must be more than 0":                      hub.WithPublishRate(0, 1),
		"hub: WithPublishRate(5, 0): the burst must be at least 1":                      hub.WithPublishRate(5, 0),
		"hub: WithDispatcher(nil): leave the option out for the default":                hub.WithDispatcher(nil),
		"hub: WithLogger(nil): leave the option out for the default":                    hub.WithLogger(nil),
		"hub: WithAuthorizer(nil): leave the option out for the default":                hub.WithAuthorizer(nil),
		`hub: WithOrigins("example.com"): an origin is scheme://host[:port]`:            hub.WithOrigins("example.com"),
		`hub: WithOrigins("https://a.example/path"): an origin is scheme://host[:port]`: hub.WithOrigins("https://a.example/path"),
	} {
		assert.PanicsWithValue(t, name, func() { hub.New(mgr, opt) })
	}
	assert.PanicsWithValue(t, "hub: New(nil): a hub serves a clientmgr.Manager's topics", func() { hub.New(nil) })
}
