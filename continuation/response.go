package continuation

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// responseWriter is the ResponseWriter every dispatch receives. It passes
// everything through to net/http's writer and remembers whether anything
// was written, so that a panic can still be answered with a 500 when it
// safely can. Unwrap lets http.ResponseController reach the original
// writer (deadlines, full duplex).
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
}

// commit notes that the response has begun, just before its header goes.
func (rw *responseWriter) commit() {
	if rw.written {
		return
	}
	rw.written = true
	if rw.closeIfUnread != nil && rw.closeIfUnread.rest != nil {
		rw.w.Header().Set("Connection", "close")
	}
}

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		rw.commit()
	}
	rw.w.WriteHeader(code)
}

func (rw *responseWriter) Write(p []byte) (int, error) {
	rw.commit()
	return rw.w.Write(p)
}

func (rw *responseWriter) WriteString(s string) (int, error) {
	rw.commit()
	return io.WriteString(rw.w, s)
}

// Flush implements http.Flusher; FlushError is preferred by
// http.ResponseController and reports the error Flush drops.
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

func (rw *responseWriter) FlushError() error {
	rw.commit()
	return http.NewResponseController(rw.w).Flush()
}

// Hijack implements http.Hijacker where the underlying writer does
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
	_ http.Flusher        = (*responseWriter)(nil)
	_ http.Hijacker       = (*responseWriter)(nil)
	_ io.StringWriter     = (*responseWriter)(nil)
	_ http.ResponseWriter = (*responseWriter)(nil)
)
