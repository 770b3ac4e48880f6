package hub_test

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/hub"
	"github.com/cometkit/cometkit/sse"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A testHub is a hub on a loopback server, with its Manager and metrics.
type testHub struct {
	t    *testing.T
	mgr  *clientmgr.Manager
	hub  *hub.Hub
	srv  *httptest.Server
	reg  *prometheus.Registry
	door *frontDoor
}

// newHub serves a hub for mgr (a new Manager if nil) at /hub/ on loopback,
// and shuts it all down when the test ends.
func newHub(t *testing.T, mgr *clientmgr.Manager, opts ...hub.Option) *testHub {
	t.Helper()
	if mgr == nil {
		mgr = clientmgr.New()
		t.Cleanup(func() { mgr.Close() })
	}
	reg := prometheus.NewRegistry()
	h := hub.New(mgr, append([]hub.Option{hub.WithMetrics(reg)}, opts...)...)
	mux := http.NewServeMux()
	mux.Handle("/hub/", h)
	door := newFrontDoor(mux)
	srv := httptest.NewUnstartedServer(door)
	srv.Config.ConnState, srv.Config.ConnContext = door.track, door.connContext
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, h.Shutdown(ctx))
		srv.Close()
	})
	return &testHub{t: t, mgr: mgr, hub: h, srv: srv, reg: reg, door: door}
}

// A frontDoor stands between a test server and the hub. It can turn
// clients away (503, with Retry-After), play a proxy that passes no
// WebSocket or no event stream, and break the connections it has served,
// WebSockets included, as a network failure would: a server's own
// CloseClientConnections leaves hijacked connections alone.
type frontDoor struct {
	next        http.Handler
	shut        atomic.Bool
	noWebSocket atomic.Bool // answer a handshake 400, as a proxy that does not pass Upgrade
	noStreams   atomic.Bool // answer an event stream 502, as a proxy that cannot stream

	mu    sync.Mutex
	conns map[net.Conn]bool // open connections: true once one has carried a request to the hub
}

func newFrontDoor(next http.Handler) *frontDoor {
	return &frontDoor{next: next, conns: map[net.Conn]bool{}}
}

type connKey struct{}

// connContext is the server's ConnContext hook: each request knows its
// connection.
func (d *frontDoor) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// track is the server's ConnState hook.
func (d *frontDoor) track(c net.Conn, s http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s {
	case http.StateNew:
		d.conns[c] = false
	case http.StateClosed:
		delete(d.conns, c)
	}
}

func (d *frontDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.shut.Load() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the test turns clients away", http.StatusServiceUnavailable)
		return
	}
	switch {
	case d.noWebSocket.Load() && r.Header.Get("Upgrade") != "":
		http.Error(w, "this proxy passes no WebSocket", http.StatusBadRequest)
		return
	case d.noStreams.Load() && r.Method == http.MethodGet && r.Header.Get("Upgrade") == "":
		http.Error(w, "this proxy cannot stream", http.StatusBadGateway)
		return
	}
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok && strings.HasSuffix(r.URL.Path, "/hub/") {
		d.mu.Lock()
		if _, open := d.conns[c]; open {
			d.conns[c] = true
		}
		d.mu.Unlock()
	}
	d.next.ServeHTTP(w, r)
}

// cut closes every connection open now.
func (d *frontDoor) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.Close()
		delete(d.conns, c)
	}
}

// cutOne closes one of the connections that have carried a request to the
// hub, picked at random, and reports whether there was one.
func (d *frontDoor) cutOne(r *rand.Rand) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	var hub []net.Conn
	for c, served := range d.conns {
		if served {
			hub = append(hub, c)
		}
	}
	if len(hub) == 0 {
		return false
	}
	c := hub[r.IntN(len(hub))]
	c.Close()
	delete(d.conns, c)
	return true
}

func (th *testHub) url() string { return th.srv.URL + "/hub/" }

func (th *testHub) publish(topic, data string) clientmgr.Message {
	th.t.Helper()
	m, err := th.mgr.Broadcast(context.Background(), topic, []byte(data))
	require.NoError(th.t, err)
	return m
}

// metric reads one series of the hub's metrics.
func (th *testHub) metric(name, label, value string) float64 {
	th.t.Helper()
	families, err := th.reg.Gather()
	require.NoError(th.t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.Gauge != nil {
						return m.Gauge.GetValue()
					}
					return m.Counter.GetValue()
				}
			}
		}
	}
	th.t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// serverFrame is any frame the hub sends, as a client decodes it.
type serverFrame struct {
	Type     string          `json:"type"`
	Topic    string          `json:"topic"`
	Cursor   string          `json:"cursor"`
	Epoch    string          `json:"epoch"`
	Seq      uint64          `json:"seq"`
	Time     time.Time       `json:"time"`
	Data     string          `json:"data"`
	Encoding string          `json:"encoding"`
	ID       json.RawMessage `json:"id"`
	Code     string          `json:"code"`
	Message  string          `json:"message"`
	RetryMs  int64           `json:"retry_ms"`
}

func decodeFrame(t *testing.T, b []byte) serverFrame {
	t.Helper()
	var f serverFrame
	require.NoError(t, json.Unmarshal(b, &f), "frame %s", b)
	return f
}

// wsClient is coder/websocket's own client on the hub.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func (th *testHub) dial(opts *websocket.DialOptions) (*wsClient, *http.Response, error) {
	if opts == nil {
		opts = &websocket.DialOptions{Subprotocols: []string{hub.Subprotocol}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(th.url(), "http"), opts)
	if err != nil {
		return nil, resp, err
	}
	th.t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: th.t, conn: conn}, resp, nil
}

func (th *testHub) mustDial() *wsClient {
	th.t.Helper()
	c, _, err := th.dial(nil)
	require.NoError(th.t, err)
	return c
}

func (c *wsClient) send(frame string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(c.t, c.conn.Write(ctx, websocket.MessageText, []byte(frame)))
}

// next reads the next frame that is not a ping.
func (c *wsClient) next() serverFrame {
	c.t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, b, err := c.conn.Read(ctx)
		cancel()
		require.NoError(c.t, err)
		if f := decodeFrame(c.t, b); f.Type != "ping" {
			return f
		}
	}
}

// closed reads until the hub closes the connection and returns the close
// code, and the frames that came before it.
func (c *wsClient) closed() (websocket.StatusCode, []serverFrame) {
	c.t.Helper()
	var frames []serverFrame
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, b, err := c.conn.Read(ctx)
		cancel()
		if err != nil {
			return websocket.CloseStatus(err), frames
		}
		frames = append(frames, decodeFrame(c.t, b))
	}
}

// longPoll posts frames and returns the status and the frames answered.
func (th *testHub) longPoll(body string, header ...string) (int, []serverFrame) {
	th.t.Helper()
	req, err := http.NewRequest(http.MethodPost, th.url(), strings.NewReader(body))
	require.NoError(th.t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := th.srv.Client().Do(req)
	require.NoError(th.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(th.t, err)
	var frames []serverFrame
	require.NoError(th.t, json.Unmarshal(b, &frames), "answer %s", b)
	return resp.StatusCode, frames
}

// An event is one server-sent event.
type event struct {
	ID, Type string
	Frame    serverFrame
}

// eventStream is an event stream read as EventSource reads it.
type eventStream struct {
	t      *testing.T
	resp   *http.Response
	events *sse.Reader
	cancel context.CancelFunc
}

// stream opens an event stream with the query and, if not "", a
// Last-Event-ID.
func (th *testHub) stream(query url.Values, lastEventID string) *eventStream {
	th.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, th.url()+"?"+query.Encode(), nil)
	require.NoError(th.t, err)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := th.srv.Client().Do(req)
	require.NoError(th.t, err)
	es := &eventStream{t: th.t, resp: resp, events: sse.NewReader(resp.Body), cancel: cancel}
	th.t.Cleanup(es.close)
	return es
}

func (es *eventStream) close() {
	es.cancel()
	es.resp.Body.Close()
}

// next reads the next event that is not a ping; ok is false when the
// stream ended.
func (es *eventStream) next() (ev event, ok bool) {
	es.t.Helper()
	for {
		ev, ok = es.event()
		if !ok || ev.Type != "ping" {
			return ev, ok
		}
	}
}

func (es *eventStream) mustNext() event {
	es.t.Helper()
	ev, ok := es.next()
	require.True(es.t, ok, "the stream ended")
	return ev
}

func (es *eventStream) event() (event, bool) {
	ev, err := es.events.Next()
	if err != nil {
		return event{}, false
	}
	return event{ID: ev.ID, Type: ev.Type, Frame: decodeFrame(es.t, ev.Data)}, true
}
