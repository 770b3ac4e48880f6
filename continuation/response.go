package continuation

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// responseWriter is the ResponseWriter every dispatch receives. It passes
// everything through to the writer underneath (net/http's, or once the
// request has detached, a connWriter) and remembers whether anything was
// written, so that a panic can still be answered with a 500 when it safely
// can. Unwrap lets http.ResponseController reach the writer underneath
// (deadlines, full duplex, flushing).
type responseWriter struct {
	w        http.ResponseWriter
	written  bool
	hijacked bool // the connection, with any body left on it, is the handler's
	// closeIfUnread, when set, is an HTTP/1.x request's body: a response
	// begun while the body still has bytes on the connection closes the
	// connection after it. Otherwise net/http would read the rest of the
	// body before sending the response, and the answer (to an expiry, to
	// Drain) would wait for however long the client takes.
	closeIfUnread *requestBody

	// head, for an HTTP/1.1 request still served by net/http, is set at
	// the first commit to what net/http decides when it sends the header,
	// so that the response can go on where net/http leaves it if the
	// request detaches; body counts the bytes written since.
	recordHead bool
	isHEAD     bool // the request's method is HEAD
	head       sentHead
	body       int64
}

// commit notes that the response has begun with status code, just before
// its header goes.
func (rw *responseWriter) commit(code int) {
	if rw.written {
		return
	}
	rw.written = true
	h := rw.w.Header()
	if rw.closeIfUnread != nil && rw.closeIfUnread.rest != nil {
		h.Set("Connection", "close")
	}
	if rw.recordHead {
		rw.head = headOf(rw.isHEAD, code, h)
	}
}

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		rw.commit(code)
	}
	rw.w.WriteHeader(code)
}

func (rw *responseWriter) Write(p []byte) (int, error) {
	rw.commit(http.StatusOK)
	rw.body += int64(len(p))
	return rw.w.Write(p)
}

func (rw *responseWriter) WriteString(s string) (int, error) {
	rw.commit(http.StatusOK)
	rw.body += int64(len(s))
	return io.WriteString(rw.w, s)
}

// Flush implements http.Flusher; FlushError is preferred by
// http.ResponseController and reports the error Flush drops.
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

func (rw *responseWriter) FlushError() error {
	rw.commit(http.StatusOK)
	return http.NewResponseController(rw.w).Flush()
}

// Hijack implements http.Hijacker where the writer underneath does
// (HTTP/1.x); after it the Dispatcher writes nothing to the response.
func (rw *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(rw.w).Hijack()
	if err == nil {
		rw.written, rw.hijacked = true, true
	}
	return conn, brw, err
}

func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

var (
	_ http.Flusher        = outsideWriter{}
	_ http.Hijacker       = outsideWriter{}
	_ io.StringWriter     = outsideWriter{}
	_ http.Flusher        = (*responseWriter)(nil)
	_ http.Hijacker       = (*responseWriter)(nil)
	_ io.StringWriter     = (*responseWriter)(nil)
	_ http.ResponseWriter = (*responseWriter)(nil)
)

// outsideWriter is the writer of Continuation.ResponseWriter: the
// response's writer, each call under c.rwMu, which detaching holds too. A
// goroutine that writes once Suspend has returned cannot tell when the
// dispatch returns and the Dispatcher takes the writer over. Each call
// checks that the request still waits (or its OnTimeout listeners run);
// once a redispatch begins or the request ends, calls fail with
// ErrNotSuspended, and those under way are waited for (writeBarrier).
type outsideWriter struct{ c *Continuation }

// outsideWritable reports whether code outside a dispatch may write the
// response now: the request is suspended and no dispatch of it runs but
// the suspending one, or its OnTimeout listeners run.
func (c *Continuation) outsideWritable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.phase == suspending || c.phase == suspended || c.phase == expiring
}

// writeBarrier waits for the calls through Continuation.ResponseWriter
// under way, once the phase has changed so that no new one may begin:
// before a redispatch runs the handler, and before the request ends.
func (c *Continuation) writeBarrier() {
	c.rwMu.Lock()
	c.rwMu.Unlock() //nolint:staticcheck // an empty critical section: waiting is the point
}

func (w outsideWriter) Header() http.Header {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	return w.c.rw.Header()
}

func (w outsideWriter) WriteHeader(code int) {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	if !w.c.outsideWritable() {
		return
	}
	w.c.rw.WriteHeader(code)
}

func (w outsideWriter) Write(p []byte) (int, error) {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	if !w.c.outsideWritable() {
		return 0, ErrNotSuspended
	}
	return w.c.rw.Write(p)
}

func (w outsideWriter) WriteString(s string) (int, error) {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	if !w.c.outsideWritable() {
		return 0, ErrNotSuspended
	}
	return w.c.rw.WriteString(s)
}

func (w outsideWriter) Flush() { _ = w.FlushError() }

func (w outsideWriter) FlushError() error {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	if !w.c.outsideWritable() {
		return ErrNotSuspended
	}
	return w.c.rw.FlushError()
}

func (w outsideWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	if !w.c.outsideWritable() {
		return nil, nil, ErrNotSuspended
	}
	return w.c.rw.Hijack()
}

func (w outsideWriter) SetReadDeadline(t time.Time) error {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	if !w.c.outsideWritable() {
		return ErrNotSuspended
	}
	return http.NewResponseController(&w.c.rw).SetReadDeadline(t)
}

func (w outsideWriter) SetWriteDeadline(t time.Time) error {
	w.c.rwMu.Lock()
	defer w.c.rwMu.Unlock()
	if !w.c.outsideWritable() {
		return ErrNotSuspended
	}
	return http.NewResponseController(&w.c.rw).SetWriteDeadline(t)
}

// sentHead is what net/http decides about an HTTP/1.1 response when it
// writes the header, before the handler has returned: how the body is
// framed, and whether the connection closes after it.
type sentHead struct {
	framing       framing
	closeAfter    bool  // the header says Connection: close
	status        int16 // three digits
	contentLength int64 // for framingLength
}

type framing uint8

const (
	framingUnknown framing = iota // Transfer-Encoding or trailers set by the handler: not followed here
	framingNone                   // no body: HEAD, 1xx, 204, 304
	framingLength                 // Content-Length
	framingChunked                // chunked, as net/http chooses when the length is not known
)

// headOf applies net/http's rules (server.go, chunkWriter.writeHeader) to
// the header an HTTP/1.1 handler set before it wrote: the status and the
// header as they are at WriteHeader, since net/http sends a copy taken
// then. The Content-Length that net/http computes for a short body once
// the handler has returned never applies here: a response that goes on
// after a suspension is sent before its handler returns.
func headOf(isHEAD bool, status int, h http.Header) sentHead {
	head := sentHead{status: int16(status), contentLength: -1}
	head.closeAfter = hasToken(first(h, "Connection"), "close")
	if first(h, "Transfer-Encoding") != "" || declaresTrailers(h) {
		return head // framingUnknown
	}
	if v := first(h, "Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			head.contentLength = n
		}
	}
	switch {
	case isHEAD || !bodyAllowedForStatus(status):
		head.framing = framingNone
	case head.contentLength >= 0:
		head.framing = framingLength
	default:
		head.framing = framingChunked
	}
	return head
}

// declaresTrailers reports whether h announces trailers, by the Trailer
// header or by keys with http.TrailerPrefix.
func declaresTrailers(h http.Header) bool {
	if _, ok := h["Trailer"]; ok {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// first returns the first value of the canonical key k, as net/http reads
// its own header.
func first(h http.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// bodyAllowedForStatus reports whether a response with status may have a
// body (RFC 9110: not 1xx, 204 or 304).
func bodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199, status == http.StatusNoContent, status == http.StatusNotModified:
		return false
	}
	return true
}

// hasToken reports whether the comma-separated header value v lists token,
// compared without case.
func hasToken(v, token string) bool {
	for part := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
		}
	}
	return false
}
