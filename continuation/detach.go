package continuation

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"time"
)

// A request that is about to wait detaches from net/http when it can: the
// Dispatcher takes its connection over (Hijack), so that net/http's
// goroutines and buffers for it go, and the request waits with no
// goroutine at all. The Dispatcher's poller watches the connection for the
// client hanging up; the end of the wait queues the request on the pool,
// which gives it a goroutine with a slot; the response goes on in a
// connWriter; when it ends, the connection goes back to the http.Server
// through the listener it came from (detachingListener).

// attachReason says why a waiting request kept its net/http goroutine.
type attachReason uint8

const (
	detachedOK     attachReason = iota
	reasonProtocol              // HTTP/2 (or HTTP/1.0): net/http's writer cannot be taken over, or the protocol has no keep-alive to give back
	reasonListener              // the connection did not come through a DetachingListener
	reasonPlatform              // no poller on this operating system
	reasonConn                  // the listener's connections give no socket to watch (a wrapper)
	reasonPoller                // the poller could not start (epoll, eventfd)
	reasonShutdown              // the Dispatcher, or the listener, is shutting down
	reasonDeadline              // the request's context has a deadline (a timeout middleware before the Dispatcher)
	reasonBody                  // the request's body has not been read to its end
	reasonWriter                // the ResponseWriter cannot be taken over (a wrapper without Unwrap; hijacked)
	reasonFraming               // the response began with a Transfer-Encoding or trailers set by the handler
	reasonLate                  // Suspend came from another goroutine after the dispatch had returned
	attachReasons
)

var attachReasonNames = [attachReasons]string{
	"", "protocol", "listener", "platform", "connection", "poller", "shutdown",
	"deadline", "body", "writer", "framing", "late",
}

// detached is what a request keeps of its connection once detached.
type detached struct {
	d      *Dispatcher
	p      *poller
	ln     *detachingListener
	conn   net.Conn // as net/http had it: a *tls.Conn over TLS
	prefix []byte   // bytes of the next request that net/http had read already
	watch  pollHandle
	w      connWriter
}

// prepareWait readies a request whose dispatch has just returned, before
// the state machine learns of the return, for a wait if one is coming: a
// detached request's writer sends what the dispatch wrote and gives back
// its buffers; an attached request detaches if it can. It returns why the
// request would wait attached. Doing this before the request is seen to
// wait means nothing else (a Resume, the poller, Drain) can see the
// request half detached.
func (d *Dispatcher) prepareWait(c *Continuation) attachReason {
	c.rwMu.Lock() // against writes through Continuation.ResponseWriter
	defer c.rwMu.Unlock()
	if !c.suspendedUndecided() {
		// No wait is coming, unless a Suspend from another goroutine lands
		// before returned: that wait stays as it is (attached, or detached
		// with the writer's buffers until the next dispatch).
		return reasonLate
	}
	if c.dc != nil {
		c.dc.w.park()
		return detachedOK
	}
	return d.detach(c)
}

// detach takes the connection of a request that is about to wait over
// from net/http, or says why it cannot.
func (d *Dispatcher) detach(c *Continuation) attachReason {
	ln, hj, why := d.detachable(c)
	if why != detachedOK {
		return why
	}
	p, why := d.poller()
	if why != detachedOK {
		return why
	}
	if c.rw.written {
		// net/http's Hijack drops what sits in the response's own buffer.
		if http.NewResponseController(c.rw.w).Flush() != nil {
			return reasonWriter
		}
	}
	header := c.rw.w.Header()
	conn, brw, err := hj.Hijack()
	if err != nil {
		return reasonWriter
	}

	dc := &detached{d: d, p: p, ln: ln, conn: conn}
	// Bytes that net/http read past the request belong to the next one:
	// they go back with the connection. A *tls.Conn cannot carry them
	// (net/http needs the type itself), so over TLS the connection closes
	// after the response instead, and the client sends them again.
	if n := brw.Reader.Buffered(); n > 0 {
		dc.prefix = make([]byte, n)
		_, _ = io.ReadFull(brw.Reader, dc.prefix)
	}
	if pc, ok := conn.(*prefixConn); ok { // handed back before
		dc.conn = pc.Conn
		dc.prefix = append(dc.prefix, pc.prefix...)
	}
	dc.w.init(dc, c.req, header, &c.rw)
	if _, isTLS := conn.(*tls.Conn); isTLS && len(dc.prefix) > 0 {
		dc.prefix = nil
		dc.w.closeAfter = true
	}
	// net/http's WriteTimeout counts from the request's arrival; Hijack
	// cleared it.
	if srv, ok := c.ctx.Context.Value(http.ServerContextKey).(*http.Server); ok && srv.WriteTimeout > 0 {
		_ = dc.conn.SetWriteDeadline(time.Unix(0, c.arrived).Add(srv.WriteTimeout))
	}

	// Nothing of net/http's stays: not its writer nor its buffers. The
	// body stays, for a redispatch to read: read to its end, it holds
	// nothing of net/http's either (only what was read ahead and not yet
	// read by the handler).
	c.rw.w = &dc.w
	c.rw.closeIfUnread = nil
	c.rw.recordHead = false
	c.mu.Lock()
	c.dc = dc
	if !c.ctx.detach() {
		c.hungUp = true // the client left before the connection was taken over
	}
	c.mu.Unlock()
	dc.watch = p.add(c, dc.conn)
	d.detachedNow.Add(1)
	d.metrics.detached.Inc()
	return detachedOK
}

// detachable checks whether a request that is about to wait can detach,
// and finds its listener and net/http's Hijacker.
func (d *Dispatcher) detachable(c *Continuation) (*detachingListener, http.Hijacker, attachReason) {
	r := c.req
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		return nil, nil, reasonProtocol
	}
	ln, ok := c.ctx.Context.Value(listenerKey{}).(*detachingListener)
	switch {
	case !ok:
		return nil, nil, reasonListener
	case !pollerSupported:
		return nil, nil, reasonPlatform
	case !ln.pollable.Load():
		return nil, nil, reasonConn
	case d.closing.Load() || ln.isClosed():
		return nil, nil, reasonShutdown
	}
	if _, ok := c.ctx.Context.Deadline(); ok {
		return nil, nil, reasonDeadline
	}
	if b := c.rw.closeIfUnread; b != nil && b.rest != nil {
		return nil, nil, reasonBody
	}
	if c.rw.written && c.rw.head.framing == framingUnknown {
		return nil, nil, reasonFraming
	}
	hj := hijacker(c.rw.w)
	if hj == nil || c.rw.hijacked {
		return nil, nil, reasonWriter
	}
	return ln, hj, detachedOK
}

// hijacker finds the http.Hijacker under w, through the Unwrap methods of
// wrappers, as http.ResponseController does.
func hijacker(w http.ResponseWriter) http.Hijacker {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// endDetached ends a finished detached request's hold on its connection:
// the response is completed, as net/http completes one when the handler
// returns, and the connection goes back to the Server for its next
// request, or is closed when it cannot carry one: the response said
// Connection: close or failed to be written, the server is shutting down,
// or the client closed its side. A response cut short (a panic after
// writing, runtime.Goexit) is not completed, and its connection is
// closed. A connection the handler hijacked is the handler's.
func (d *Dispatcher) endDetached(c *Continuation, cut bool) {
	dc := c.dc
	c.mu.Lock()
	gone := c.hungUp
	c.mu.Unlock()
	keep := false
	switch {
	case dc.w.hijacked:
	case cut:
		dc.w.drop()
	default:
		keep = dc.w.finish() && dc.keepAlives() && !gone
	}
	dc.p.remove(dc.watch) // before the descriptor can be closed and reused
	if !dc.w.hijacked {
		// Deadlines set on the connection (WriteTimeout, the handler's)
		// would outlive the request: net/http does not clear them.
		if keep && dc.conn.SetDeadline(time.Time{}) == nil {
			dc.ln.handBack(dc.withPrefix())
		} else {
			dc.conn.Close()
		}
	}
	d.detachedNow.Add(-1)
	d.metrics.detached.Dec()
}

// keepAlives says whether the connection may carry another request after
// this response.
func (dc *detached) keepAlives() bool {
	return !dc.d.closing.Load() && !dc.ln.isClosed()
}

// handOver gives the connection to a handler that hijacks it in a
// detached dispatch; the poller stops watching it.
func (dc *detached) handOver() net.Conn {
	dc.p.unwatch(dc.watch)
	return dc.withPrefix()
}

func (dc *detached) withPrefix() net.Conn {
	if len(dc.prefix) > 0 {
		return &prefixConn{Conn: dc.conn, prefix: dc.prefix}
	}
	return dc.conn
}

// startPoller starts a poller; a variable so that a test can make it fail.
var startPoller = newPoller

// pollRetry is how long after a poller failed to start it is tried again.
const pollRetry = time.Second

// poller returns the Dispatcher's poller, started by the first request
// that detaches and stopped once the Dispatcher has drained.
func (d *Dispatcher) poller() (*poller, attachReason) {
	d.pollMu.Lock()
	defer d.pollMu.Unlock()
	if d.poll != nil {
		return d.poll, detachedOK
	}
	if d.pollDone {
		return nil, reasonShutdown
	}
	// A poller that could not start (out of descriptors, say) is tried
	// again a second later, not by every request that waits meanwhile,
	// and the failure is logged once, not with each of them.
	if !d.pollFail.IsZero() && time.Since(d.pollFail) < pollRetry {
		return nil, reasonPoller
	}
	p, err := startPoller((*Continuation).hangUp, d.logger)
	if err != nil {
		if d.pollFail.IsZero() {
			d.logger.Warn("continuation: waiting requests stay attached: cannot watch connections", "err", err)
		}
		d.pollFail = time.Now()
		return nil, reasonPoller
	}
	d.poll, d.pollFail = p, time.Time{}
	return p, detachedOK
}

// drainDetached expires every detached request that waits, for Drain.
func (d *Dispatcher) drainDetached() {
	d.pollMu.Lock()
	p := d.poll
	d.pollMu.Unlock()
	if p == nil {
		return
	}
	for _, c := range p.registered() {
		c.drain()
	}
}

// stopPoller stops the poller for good; nothing is detached any more.
func (d *Dispatcher) stopPoller() {
	d.pollMu.Lock()
	p := d.poll
	d.poll, d.pollDone = nil, true
	d.pollMu.Unlock()
	if p != nil {
		p.stop()
	}
}
