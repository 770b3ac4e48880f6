package hub

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/cometkit/cometkit/clientmgr"
)

// A socket is one WebSocket the hub owns. Two goroutines serve it: the
// reader (readLoop) reads the client's frames and answers them into the
// send queue; the writer (writeLoop) takes what the subscriptions received
// into the queue, writes the queue to the connection, pings, and at the
// end closes the subscriptions and the connection. Neither waits for the
// other, except that the writer, last, waits for the reader to return.
type socket struct {
	h    *Hub
	conn *websocket.Conn
	peer peer
	// ctx ends when the socket stops; the reader's publishes and
	// subscribes and the writer's history reads run within it.
	ctx        context.Context
	cancel     context.CancelFunc
	signal     chan struct{} // wakes the writer: frames queued, a subscription ready, a stop
	readerDone chan struct{}

	mu     sync.Mutex
	subs   map[string]*subscription
	ready  []*subscription // subscriptions with something to take
	queue  [][]byte        // frames waiting for the connection, oldest first
	queued int             // their bytes
	// Set once, by stop: the socket is ending with this close code and
	// reason (code 0: no close frame to send), after writing what is
	// queued if flush.
	stopped bool
	code    websocket.StatusCode
	reason  string
	flush   bool
}

// A subscription is one topic a socket follows. Its mu is held while it is
// made, taken from and closed, and over putting its frames in the queue,
// so that subscribed comes before its messages and unsubscribed after.
type subscription struct {
	s       *socket
	topic   string
	pending atomic.Bool // in s.ready

	mu     sync.Mutex
	sub    *clientmgr.Subscription
	closed bool
}

// serveWebSocket answers a handshake: it is checked, upgraded, and handed
// to the socket's goroutines; the dispatch then returns, and its worker
// with it.
func (h *Hub) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !h.checkRequest(w, r, offersVersion(r)) {
		return
	}
	addr := h.clientAddr(r)
	access, authErr := h.cfg.authorizer.Authorize(r)
	admitted := h.addrs.acquire(addr)
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       []string{Subprotocol},
		InsecureSkipVerify: true, // checkRequest checked the origin, for every transport alike
	})
	if err != nil { // Accept has answered
		if admitted {
			h.addrs.release(addr)
		}
		return
	}
	switch {
	case authErr != nil || access == nil:
		if admitted {
			h.addrs.release(addr)
		}
		h.refuseSocket(conn, codeForbidden, "not allowed to connect", CloseForbidden)
		return
	case !admitted:
		h.refuseSocket(conn, codeTooManyConnections, "too many connections from this address", CloseTooManyConnections)
		return
	}
	conn.SetReadLimit(int64(h.cfg.maxMessageSize))
	s := &socket{
		h: h, conn: conn,
		peer:       peer{addr: addr, access: access, key: clientKey(access, addr)},
		signal:     make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		subs:       map[string]*subscription{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !h.hold(s) {
		s.stop(CloseGoingAway, "going away: the server is shutting down", false)
	}
	h.metrics.connections.WithLabelValues(transportWebSocket).Inc()
	go s.readLoop()
	go s.writeLoop()
}

// offersVersion reports whether a handshake asks for a version the hub
// speaks: version 1's subprotocol among those it offers, or none.
func offersVersion(r *http.Request) bool {
	offered := r.Header.Values("Sec-WebSocket-Protocol")
	return len(offered) == 0 || headerHasToken(r.Header, "Sec-WebSocket-Protocol", Subprotocol)
}

// refuseSocket sends an upgraded connection one error frame and closes it
// with code, on a goroutine of the hub's: the close handshake may take
// seconds, which the dispatch's worker should not wait.
func (h *Hub) refuseSocket(conn *websocket.Conn, code, message string, closeCode websocket.StatusCode) {
	h.metrics.refused(code)
	h.hold(nil)
	go func() {
		defer h.letGo(nil)
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.writeTimeout)
		defer cancel()
		if conn.Write(ctx, websocket.MessageText, errorFrame(code, message).encode()) == nil {
			conn.Close(closeCode, message)
		}
		conn.CloseNow()
	}()
}

// stop ends the socket: once, with the first code and reason given.
func (s *socket) stop(code websocket.StatusCode, reason string, flush bool) {
	s.mu.Lock()
	s.stopLocked(code, reason, flush)
	s.mu.Unlock()
}

func (s *socket) stopLocked(code websocket.StatusCode, reason string, flush bool) {
	if s.stopped {
		return
	}
	s.stopped, s.code, s.reason, s.flush = true, code, reason, flush
	s.cancel()
	s.wake()
}

func (s *socket) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// enqueue puts frames in the send queue. A queue that would hold more
// than WithSendQueue bytes (one frame larger than that is let through
// alone) is a client that does not read fast enough: the socket stops
// with 4008, and what is queued is dropped, never sent in part.
func (s *socket) enqueue(frames ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	for _, f := range frames {
		if len(s.queue) > 0 && s.queued+len(f) > s.h.cfg.sendQueue {
			s.slowLocked()
			return
		}
		s.queue = append(s.queue, f)
		s.queued += len(f)
	}
	s.wake()
}

func (s *socket) slowLocked() {
	s.h.metrics.slow.WithLabelValues(transportWebSocket).Inc()
	s.stopLocked(CloseSlowConsumer, "slow consumer", false)
}

// readLoop is the reader goroutine: it reads frames until the connection
// ends or the client breaks a rule.
func (s *socket) readLoop() {
	defer close(s.readerDone)
	for {
		// No deadline: the writer's pings find a client that is gone,
		// and closing the connection ends this read.
		typ, b, err := s.conn.Read(context.Background())
		switch {
		case err != nil:
			if errors.Is(err, websocket.ErrMessageTooBig) {
				s.h.metrics.refused(codeTooLarge) // the library has closed it with 1009
			}
			s.stop(0, "", false)
			return
		case typ != websocket.MessageText:
			s.h.metrics.refused(codeBadRequest)
			s.enqueue(errorFrame(codeBadRequest, "binary messages are not accepted: the wire format is JSON text").encode())
			s.stop(CloseUnsupportedData, "binary message", true)
			return
		}
		f, err := parseFrame(b)
		if err != nil {
			s.h.metrics.refused(codeBadRequest)
			s.enqueue(errorFrame(codeBadRequest, err.Error()).encode())
			s.stop(CloseBadRequest, "bad request", true)
			return
		}
		if !s.handle(f) {
			return
		}
	}
}

// handle answers one frame. The application's hooks run here; a panic in
// one is logged and ends the socket with 1011.
func (s *socket) handle(f clientFrame) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.h.cfg.logger.Error("hub: panic serving a WebSocket frame", "op", f.Op, "topic", f.Topic,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			s.stop(CloseInternalError, "internal error", false)
			ok = false
		}
	}()
	switch f.Op {
	case opPing:
		s.enqueue(pongFrame)
	case opSubscribe:
		s.subscribe(f.Topic, f.Cursor)
	case opUnsubscribe:
		s.unsubscribe(f.Topic)
	case opPublish:
		s.enqueue(s.h.publish(s.ctx, &s.peer, f))
	}
	return true
}

func (s *socket) refuseTopic(topic, code, message string) {
	s.h.metrics.refused(code)
	e := errorFrame(code, message)
	e.Topic = topic
	s.enqueue(e.encode())
}

// subscribe starts following topic from the client's cursor; a topic the
// socket follows already starts again from the new cursor.
func (s *socket) subscribe(topic, cursor string) {
	if !s.peer.access.CanSubscribe(topic) {
		s.refuseTopic(topic, codeForbidden, "not allowed to subscribe to this topic")
		return
	}
	s.mu.Lock()
	old, n := s.subs[topic], len(s.subs)
	s.mu.Unlock()
	if old != nil {
		old.end()
	} else if n >= s.h.cfg.maxTopics {
		s.refuseTopic(topic, codeTooManyTopics, fmt.Sprintf("a connection may follow %d topics", s.h.cfg.maxTopics))
		return
	}
	after, code, message := s.h.subscribeFrom(s.ctx, topic, cursor)
	if code != "" {
		s.forget(old)
		s.refuseTopic(topic, code, message)
		return
	}
	sub := &subscription{s: s, topic: topic}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, readTimeout)
	defer cancel()
	var err error
	if sub.sub, err = s.h.mgr.Subscribe(ctx, topic, after, sub.ready); err != nil {
		s.forget(old)
		code, message := managerError(err)
		s.refuseTopic(topic, code, message)
		return
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		sub.sub.Close()
		return
	}
	s.subs[topic] = sub
	s.mu.Unlock()
	s.enqueue(subscribedFrame(topic, after))
}

// forget drops an ended subscription from the socket's map, unless a newer
// one took its place.
func (s *socket) forget(sub *subscription) {
	if sub == nil {
		return
	}
	s.mu.Lock()
	if s.subs[sub.topic] == sub {
		delete(s.subs, sub.topic)
	}
	s.mu.Unlock()
}

func (s *socket) unsubscribe(topic string) {
	s.mu.Lock()
	sub := s.subs[topic]
	delete(s.subs, topic)
	s.mu.Unlock()
	if sub != nil {
		sub.end()
	}
	s.enqueue(frame{Type: "unsubscribed", Topic: topic}.encode())
}

// ready is the clientmgr.Subscription's ready function: it must not
// block, so it only lists the subscription for the writer.
func (sub *subscription) ready() {
	if sub.pending.Swap(true) {
		return
	}
	s := sub.s
	s.mu.Lock()
	s.ready = append(s.ready, sub)
	s.mu.Unlock()
	s.wake()
}

// end closes the subscription: nothing of it is queued after end returns.
func (sub *subscription) end() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if !sub.closed {
		sub.closed = true
		sub.sub.Close()
	}
}

// take queues what the subscription received since the last take. A
// history read that fails ends the subscription, with an error frame: the
// client subscribes again from its cursor.
func (sub *subscription) take() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.closed {
		return
	}
	s := sub.s
	ctx, cancel := context.WithTimeout(s.ctx, readTimeout)
	b, err := sub.sub.Take(ctx)
	cancel()
	frames := batchFrames(b, nil, &budget{left: math.MaxInt}) // the send queue bounds it
	if err != nil {
		sub.closed = true
		sub.sub.Close()
		s.forget(sub)
		s.h.metrics.refused(codeUnavailable)
		e := errorFrame(codeUnavailable, "the subscription ended: subscribe again from your cursor")
		e.Topic, e.Cursor = sub.topic, b.Next.String()
		frames = append(frames, e.encode())
	}
	s.enqueue(frames...)
}

// writeLoop is the writer goroutine.
func (s *socket) writeLoop() {
	ping := time.NewTicker(s.h.cfg.pingInterval)
	defer ping.Stop()
	for s.writeQueued() {
		select {
		case <-s.signal:
		case <-ping.C:
			s.enqueue(pingFrame)
			s.ping()
		}
	}
	s.finish()
}

// writeQueued takes what the ready subscriptions hold and writes the
// queue, one frame at a time, taking again before each. It reports false
// once the socket has stopped (and, for a flushing stop, the queue is
// empty).
func (s *socket) writeQueued() bool {
	for {
		s.mu.Lock()
		ready := s.ready
		s.ready = nil
		s.mu.Unlock()
		for _, sub := range ready {
			sub.pending.Store(false)
			sub.take()
		}
		s.mu.Lock()
		if s.stopped && (!s.flush || len(s.queue) == 0) {
			s.mu.Unlock()
			return false
		}
		if len(s.queue) == 0 {
			s.mu.Unlock()
			return true
		}
		f := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.queued -= len(f)
		s.mu.Unlock()
		if err := s.write(f); err != nil {
			return false
		}
	}
}

// write sends one frame within WithWriteTimeout; a client that does not
// take it in time is a slow consumer (the library has closed the
// connection: no close frame could be written).
func (s *socket) write(f []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.cfg.writeTimeout)
	defer cancel()
	err := s.conn.Write(ctx, websocket.MessageText, f)
	if err != nil {
		s.mu.Lock()
		if ctx.Err() != nil {
			s.slowLocked()
		}
		s.stopLocked(0, "", false)
		s.mu.Unlock()
	}
	return err
}

// ping sends a ping control frame and waits for its pong, which the
// reader reads. A client that does not answer within WithPingTimeout is
// closed with 4000.
func (s *socket) ping() {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.cfg.pingTimeout)
	defer cancel()
	if err := s.conn.Ping(ctx); err != nil {
		s.stop(ClosePingTimeout, "ping timeout", false)
	}
}

// finish ends the socket: its subscriptions, the connection (with its
// close code when there is one to send), and, once the reader has
// returned, the hub's count.
func (s *socket) finish() {
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	code, reason := s.code, s.reason
	s.mu.Unlock()
	for _, sub := range subs {
		sub.end()
	}
	if code != 0 {
		s.conn.Close(code, reason)
	}
	s.conn.CloseNow()
	<-s.readerDone
	s.h.metrics.connections.WithLabelValues(transportWebSocket).Dec()
	s.h.addrs.release(s.peer.addr)
	s.h.letGo(s)
}
