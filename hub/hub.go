package hub

import (
	"context"
	"embed"
	"errors"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/internal/respond"
)

// A Hub serves a Manager's topics to clients over WebSocket, server-sent
// events and long-polling, all speaking one wire format. It is an
// http.Handler; create one with New.
//
// Long-polls and event streams are continuation handlers on the hub's
// Dispatcher: a waiting client holds no worker. A WebSocket is hijacked
// from net/http after its handshake, and the hub owns it: one goroutine
// reads it and one writes it, until the client leaves, breaks a rule, or
// Drain closes it.
type Hub struct {
	mgr     *clientmgr.Manager
	cfg     config
	d       *continuation.Dispatcher
	served  http.Handler // the hub's dispatch, through d
	metrics *metrics
	addrs   addrCounter
	limits  *publishLimits

	mu      sync.Mutex
	closing bool
	sockets map[*socket]struct{} // WebSockets the hub owns
	held    int                  // hijacked connections whose goroutines have not ended
	idle    chan struct{}        // closed once closing and held is 0
}

// New returns a Hub serving mgr's topics. The application keeps mgr: it
// publishes on it, and closes it after the hub's Shutdown. New panics if
// mgr is nil or an option's argument cannot be meant (see [Option]).
func New(mgr *clientmgr.Manager, opts ...Option) *Hub {
	check.That(mgr != nil, "New", mgr, "a hub serves a clientmgr.Manager's topics")
	cfg := newConfig(opts)
	h := &Hub{
		mgr:     mgr,
		cfg:     cfg,
		metrics: newMetrics(cfg.registerer),
		addrs:   addrCounter{limit: cfg.maxConnsPerAddr, open: map[netip.Prefix]int{}},
		limits:  newPublishLimits(cfg.publishRate, cfg.publishBurst),
		sockets: map[*socket]struct{}{},
		idle:    make(chan struct{}),
	}
	var dispatch http.Handler = http.HandlerFunc(h.dispatch)
	for _, mw := range slices.Backward(cfg.middleware) {
		dispatch = mw(dispatch)
	}
	if cfg.dispatcher != nil {
		h.d, h.served = cfg.dispatcher, cfg.dispatcher.Handler(dispatch)
	} else {
		h.d = continuation.NewDispatcher(dispatch)
		h.served = h.d
	}
	return h
}

//go:embed client.js
var clientJS embed.FS

// ServeHTTP serves one request: a WebSocket handshake (a GET with Upgrade:
// websocket), an event stream (a GET with Accept: text/event-stream, or
// the query parameter transport=sse), a long-poll (a POST), or the
// browser client (a GET of a path whose last element is client.js). Mount
// the hub on a path that ends in a slash, so that both reach it:
//
//	http.Handle("/hub/", h) // the endpoint /hub/, the client /hub/client.js
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && path.Base(r.URL.Path) == "client.js" {
		w.Header().Set("Cache-Control", "no-cache")
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.cfg.writeTimeout)) // 40 KiB to a client that may not read
		http.ServeFileFS(w, r, clientJS, "client.js")
		return
	}
	h.served.ServeHTTP(w, r)
}

// stateAttr is the continuation attribute under which a long-poll or an
// event stream keeps its state between dispatches.
const stateAttr = "cometkit/hub"

// resumer is a long-poll's or an event stream's state, dispatched again.
type resumer interface {
	resume(w http.ResponseWriter, c *continuation.Continuation)
}

// dispatch runs every dispatch of every request the hub serves, on its
// Dispatcher's pool.
func (h *Hub) dispatch(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if !c.IsInitial() {
		c.Attribute(stateAttr).(resumer).resume(w, c)
		return
	}
	switch {
	case r.Method == http.MethodGet && isWebSocket(r):
		h.serveWebSocket(w, r)
	case r.Method == http.MethodGet && wantsEvents(r):
		h.serveEvents(w, r, c)
	case r.Method == http.MethodPost,
		r.Method == http.MethodGet && r.URL.Query().Get("transport") == "longpoll":
		h.servePoll(w, r, c)
	case r.Method == http.MethodGet:
		h.refuse(w, http.StatusBadRequest, codeBadRequest,
			"connect with a WebSocket, an event stream (Accept: text/event-stream) or a long-poll (POST, or GET with ?transport=longpoll)")
	default:
		w.Header().Set("Allow", "GET, POST")
		h.refuse(w, http.StatusMethodNotAllowed, codeBadRequest, "the hub answers GET and POST")
	}
}

func isWebSocket(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func wantsEvents(r *http.Request) bool {
	return r.URL.Query().Get("transport") == "sse" || headerHasToken(r.Header, "Accept", "text/event-stream")
}

// headerHasToken reports whether a comma-separated header holds token,
// ignoring case and parameters ("text/event-stream;q=0.9").
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			t, _, _ = strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// A peer is one connection's client as the hub knows it.
type peer struct {
	addr   netip.Addr
	access Access
	key    string // what WithPublishRate counts it by
}

// admit runs the checks every long-poll and event stream passes before
// anything else: the version, the origin, the connections from its
// address, and the Authorizer. On success the connection is counted until
// the request finishes; on failure the request has been answered.
func (h *Hub) admit(w http.ResponseWriter, r *http.Request, c *continuation.Continuation, transport string) (peer, bool) {
	if !h.checkRequest(w, r, r.URL.Query().Get("v") == "" || r.URL.Query().Get("v") == strconv.Itoa(Version)) {
		return peer{}, false
	}
	// The Authorizer first, as for a WebSocket: it is the application's
	// code, and a panic in it must not leave the address counted.
	access, err := h.cfg.authorizer.Authorize(r)
	if err != nil || access == nil {
		h.refuse(w, http.StatusForbidden, codeForbidden, "not allowed to connect")
		return peer{}, false
	}
	addr := h.clientAddr(r)
	if !h.addrs.acquire(addr) {
		w.Header().Set("Retry-After", "10")
		h.refuse(w, http.StatusTooManyRequests, codeTooManyConnections, "too many connections from this address")
		return peer{}, false
	}
	gauge := h.metrics.connections.WithLabelValues(transport)
	gauge.Inc()
	c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) {
		gauge.Dec()
		h.addrs.release(addr)
	}})
	return peer{addr: addr, access: access, key: clientKey(access, addr)}, true
}

// checkRequest refuses a request in a version the hub does not speak, or
// from a page of another origin.
func (h *Hub) checkRequest(w http.ResponseWriter, r *http.Request, versionOK bool) bool {
	switch {
	case !versionOK:
		h.refuse(w, http.StatusBadRequest, codeUnsupportedVersion, "this hub speaks version "+strconv.Itoa(Version)+" of the wire format")
		return false
	case !h.originAllowed(r):
		h.metrics.refused("origin")
		writeFrames(w, http.StatusForbidden, [][]byte{errorFrame(codeForbidden, "this origin may not connect").encode()}, h.cfg.writeTimeout)
		return false
	}
	return true
}

// refuse answers a request with status and one error frame, in an array,
// as a long-poll's answer is.
func (h *Hub) refuse(w http.ResponseWriter, status int, code, message string) {
	h.metrics.refused(code)
	writeFrames(w, status, [][]byte{errorFrame(code, message).encode()}, h.cfg.writeTimeout)
}

// writeFrames answers with frames as a JSON array, the whole response
// written within timeout: a client that does not read would otherwise hold
// the worker writing to it for as long as it likes (a poll's answer can be
// a whole history).
func writeFrames(w http.ResponseWriter, status int, frames [][]byte, timeout time.Duration) {
	w.Header().Set("Cache-Control", "no-store")
	respond.Bounded(w, status, "application/json", joinFrames(frames), timeout)
}

// publish carries out a client's publish and returns the frame that
// answers it: published, or an error.
func (h *Hub) publish(ctx context.Context, p *peer, f clientFrame) []byte {
	fail := func(code, message string) []byte {
		h.metrics.refused(code)
		e := errorFrame(code, message)
		e.Topic, e.ID = f.Topic, f.ID
		return e.encode()
	}
	data, err := f.data()
	if err != nil {
		return fail(codeBadRequest, "data is not base64")
	}
	if ok, wait := h.limits.allow(p.key, time.Now()); !ok {
		e := errorFrame(codeRateLimited, "publishing too fast")
		e.Topic, e.ID, e.RetryMs = f.Topic, f.ID, max(wait.Milliseconds(), 1)
		h.metrics.refused(codeRateLimited)
		return e.encode()
	}
	if !p.access.CanPublish(f.Topic) {
		return fail(codeForbidden, "not allowed to publish on this topic")
	}
	if hook := h.cfg.publishHook; hook != nil {
		if data, err = hook(ctx, p.access, f.Topic, data); err != nil {
			return fail(codeRejected, err.Error())
		}
	}
	msg, err := h.mgr.Broadcast(ctx, f.Topic, data)
	if err != nil {
		code, message := managerError(err)
		return fail(code, message)
	}
	return frame{Type: "published", Topic: f.Topic, ID: f.ID, Cursor: msg.Cursor().String()}.encode()
}

// managerError turns a Manager's error into an error frame's code and
// message.
func managerError(err error) (code, message string) {
	switch {
	case errors.Is(err, clientmgr.ErrInvalidTopic):
		return codeBadRequest, "not a topic: 1 to 256 bytes of UTF-8 without control characters"
	case errors.Is(err, clientmgr.ErrMessageTooLarge):
		return codeTooLarge, "the data is larger than the hub accepts"
	case errors.Is(err, clientmgr.ErrTooManyTopics):
		return codeUnavailable, "the hub holds as many topics as it may"
	default:
		return codeUnavailable, "the hub cannot serve this topic now"
	}
}

// readTimeout bounds the history reads a subscription makes.
const readTimeout = clientmgr.DefaultReadTimeout

// subscribeFrom returns where a subscription with the client's cursor
// token starts: after the cursor, or, for "", after the topic's newest
// message. It returns an error frame's code and message if it cannot.
func (h *Hub) subscribeFrom(ctx context.Context, topic, token string) (clientmgr.Cursor, string, string) {
	if token != "" {
		at, err := clientmgr.ParseCursor(token)
		if err != nil {
			return at, codeBadRequest, "not a cursor this hub gave"
		}
		return at, "", ""
	}
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	at, err := h.mgr.Head(ctx, topic)
	if err != nil {
		code, message := managerError(err)
		return at, code, message
	}
	return at, "", ""
}

// Drain begins the hub's shutdown and returns at once, as
// [http.Server.RegisterOnShutdown] wants: every WebSocket is closed with
// 1001 (going away), and the Dispatcher is drained, so that event streams
// end, long-polls answer, and new requests get 503. Clients reconnect,
// with their back-off, to another node or to this one once it is back,
// and resume from their cursors. The Manager is the application's to
// close, after Shutdown.
func (h *Hub) Drain() {
	h.mu.Lock()
	h.closing = true
	sockets := make([]*socket, 0, len(h.sockets))
	for s := range h.sockets {
		sockets = append(sockets, s)
	}
	if h.held == 0 {
		h.closeIdleLocked()
	}
	h.mu.Unlock()
	for _, s := range sockets {
		s.stop(CloseGoingAway, "going away: the server is shutting down", false)
	}
	h.d.Drain()
}

// Shutdown is Drain, then a wait until every WebSocket's goroutines have
// ended and every request has finished: it returns nil then, or ctx's
// error if ctx ends first. Wire it in front of the server's own:
//
//	srv.RegisterOnShutdown(h.Drain)
//	if err := srv.Shutdown(ctx); err != nil { ... }
//	h.Shutdown(ctx) // the WebSockets, which srv.Shutdown does not track
func (h *Hub) Shutdown(ctx context.Context) error {
	h.Drain()
	select {
	case <-h.idle:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.d.Shutdown(ctx)
}

// hold counts a hijacked connection whose goroutines the hub owns; it
// reports false once the hub is closing.
func (h *Hub) hold(s *socket) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held++
	if s != nil && !h.closing {
		h.sockets[s] = struct{}{}
	}
	return !h.closing
}

// letGo ends what hold began, once the connection's goroutines are done.
func (h *Hub) letGo(s *socket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sockets, s)
	if h.held--; h.held == 0 && h.closing {
		h.closeIdleLocked()
	}
}

func (h *Hub) closeIdleLocked() {
	select {
	case <-h.idle:
	default:
		close(h.idle)
	}
}
