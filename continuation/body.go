package continuation

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// readBody reads the request's body into memory, up to WithBodyBuffer
// bytes, on the request's own goroutine and before the request takes a
// worker, so that a client sending its body slowly (or never) costs a
// goroutine net/http gave it anyway and no worker. The whole body must
// arrive within WithBodyTimeout, a read deadline on the connection that
// also bounds the handler's reads of a body longer than the buffer; and
// Drain cuts the read short by moving that deadline into the past.
//
// It reports whether the request goes on to its first dispatch. If not,
// the request has been answered (408 for a body too slow, 503 when the
// Dispatcher began draining meanwhile, 413 or 400 for a body that cannot
// be read) or the client has gone and nobody is left to answer.
func (d *Dispatcher) readBody(c *Continuation, w http.ResponseWriter, r *http.Request) bool {
	if !hasBody(r) {
		return true
	}
	body := &requestBody{}
	c.req.Body = body
	if r.ProtoMajor < 2 {
		c.rw.closeIfUnread = body
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(d.cfg.bodyTimeout)) != nil {
		// A writer without read deadlines (a recorder, a wrapper without
		// Unwrap): nothing can bound or interrupt the read, so read as a
		// handler would have.
		return d.afterReadAhead(w, r, body.readAhead(r.Body, d.cfg.bodyBuffer, r.ContentLength), false)
	}
	drained := make(chan struct{})
	stop := context.AfterFunc(d.draining, func() {
		defer close(drained)
		_ = rc.SetReadDeadline(aLongTimeAgo)
	})
	err := body.readAhead(r.Body, d.cfg.bodyBuffer, r.ContentLength)
	interrupted := !stop()
	if interrupted {
		<-drained // it uses the writer, which is ours only until we return
	}
	return d.afterReadAhead(w, r, err, interrupted)
}

// afterReadAhead answers a request whose body could not be read ahead, and
// reports whether the request goes on to be dispatched.
func (d *Dispatcher) afterReadAhead(w http.ResponseWriter, r *http.Request, err error, interrupted bool) bool {
	var tooLarge *http.MaxBytesError
	switch {
	case interrupted:
		// Even if the body came in full: the deadline is in the past now,
		// and on HTTP/1.1 net/http would take it for a lost client.
		d.refuse(w, r, "server shutting down")
	case err == nil:
		return true
	case errors.Is(err, os.ErrDeadlineExceeded):
		closeAfter(w, r)
		http.Error(w, "request body not received in time", http.StatusRequestTimeout)
	case r.Context().Err() != nil:
		// The client went away in the middle of its body.
	case errors.As(err, &tooLarge):
		// A MaxBytesReader put around the body before the Dispatcher.
		closeAfter(w, r)
		http.Error(w, http.StatusText(http.StatusRequestEntityTooLarge), http.StatusRequestEntityTooLarge)
	default:
		closeAfter(w, r)
		http.Error(w, "malformed request body", http.StatusBadRequest)
	}
	return false
}

// aLongTimeAgo is a read deadline that has passed: it makes a read that
// waits for the client fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// closeAfter prepares the answer to an HTTP/1.x request whose body is
// (partly) still on the connection, and which nobody will read: the
// connection closes after the answer, since the next request could not be
// found behind the rest of the body, and nobody waits for that rest
// (net/http would read it, before the answer or after, for as long as the
// client takes). An HTTP/2 stream ends on its own.
func closeAfter(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor < 2 {
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(aLongTimeAgo)
	}
}

// dropUnreadBody ends an HTTP/1.x request whose body nobody read to its
// end, once its dispatches are over: net/http, which reads up to 256 KiB
// of an unread body after the answer, then gives up at once (and closes
// the connection) instead of waiting for a slow client until the body
// deadline. The answer itself closed the connection if it began while
// the body was unread (see responseWriter.commit).
func (c *Continuation) dropUnreadBody() {
	if c.rw.closeIfUnread != nil && c.rw.closeIfUnread.rest != nil && !c.rw.hijacked {
		_ = http.NewResponseController(c.rw.w).SetReadDeadline(aLongTimeAgo)
	}
}

// hasBody reports whether r comes with a body to read.
func hasBody(r *http.Request) bool { return r.Body != nil && r.Body != http.NoBody }

// requestBody is the body every dispatch reads: the bytes read ahead from
// memory, then, for a body longer than the buffer, the rest from
// net/http's body as the handler asks for it.
type requestBody struct {
	ahead  []byte        // read ahead and not yet read by the handler
	rest   io.ReadCloser // net/http's body while it has bytes to come; nil once read to its end
	closed bool
}

// readAhead fills b with up to limit bytes of body. size is the length
// the client announced (-1 if unknown); beyond the first 4 KiB the buffer
// grows as bytes arrive, not to what the client claims.
func (b *requestBody) readAhead(body io.ReadCloser, limit int, size int64) error {
	b.rest = body
	want := limit
	if size >= 0 && size < int64(limit) {
		want = int(size) + 1 // room to see the end, which may come in a read of its own
	}
	if want == 0 {
		return nil
	}
	buf := make([]byte, 0, min(want, 4<<10)) // no more than net/http's own buffers, whatever the client claims
	for {
		if len(buf) == cap(buf) {
			if len(buf) == want {
				break // the buffer is full; the rest streams
			}
			grown := make([]byte, len(buf), min(want, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			b.rest = nil // read to its end; on HTTP/1.1 net/http now watches for the client leaving
			break
		}
		if err != nil {
			return err
		}
	}
	if len(buf) > 0 {
		b.ahead = buf
	}
	return nil
}

func (b *requestBody) Read(p []byte) (int, error) {
	switch {
	case b.closed:
		return 0, http.ErrBodyReadAfterClose
	case len(b.ahead) > 0:
		n := copy(p, b.ahead)
		b.ahead = b.ahead[n:]
		if len(b.ahead) == 0 {
			b.ahead = nil // the buffer can go
		}
		return n, nil
	case b.rest == nil:
		return 0, io.EOF
	}
	n, err := b.rest.Read(p)
	if err == io.EOF {
		b.rest = nil
	}
	return n, err
}

// Close lets the buffer go. It leaves net/http's body alone: net/http
// discards what is left of it once the request has ended, so a handler's
// Close never blocks on a slow client.
func (b *requestBody) Close() error {
	b.closed = true
	b.ahead = nil
	return nil
}
