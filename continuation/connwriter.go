package continuation

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// connWriter is the ResponseWriter of a detached request: it writes the
// HTTP/1.1 response on the connection taken over from net/http, by
// net/http's own rules (server.go, the response and its chunkWriter), so
// that a client cannot tell the two apart: the header copied at
// WriteHeader, the status line, Date, a sniffed Content-Type, a
// Content-Length when the handler set one or when the whole body fits the
// first 2 KiB and the request ends, chunked otherwise, no body for HEAD,
// 1xx, 204 and 304, informational 1xx headers sent at once, trailers, and
// Connection: close when the request asked for it, the handler set it, or
// the server is shutting down. If net/http had sent the header already
// (the first dispatch wrote before it suspended), it goes on with the body
// in the framing net/http chose.
//
// It holds buffers only while something is being written: they come from
// pools when the first byte is written and go back when the dispatch
// suspends again or the response ends, so a waiting request holds none.
// Like net/http's, it must not be used by two goroutines at once.
type connWriter struct {
	dc            *detached
	req           *http.Request
	handlerHeader http.Header // what Header returns
	header        http.Header // the copy that is sent, taken at WriteHeader
	status        int
	wroteHeader   bool  // a final status has been written (logically)
	handlerDone   bool  // the request is ending: nothing more will be written
	contentLength int64 // -1 if unknown
	written       int64 // bytes of body written
	trailers      []string
	closeAfter    bool
	hijacked      bool

	headerSent bool // the header is on its way: in bw or on the wire
	chunking   bool

	pre    *bufio.Writer // the body before it is framed; writes to chunks
	bw     *bufio.Writer // the framed response; writes to out
	chunks chunkSink
	out    connSink
	werr   error // the first error writing to the connection
}

// preBufferSize is how much body is buffered before the header goes, as
// net/http's bufferBeforeChunkingSize: enough to sniff a Content-Type,
// and to send a short answer with a Content-Length.
const preBufferSize = 2 << 10

// The buffers of the responses being written, shared by all detached
// requests. (The writer net/http hands over with a hijacked connection is
// not kept for them: a pool that got one per detached request and gave
// out one per write in progress would hold thousands.)
var (
	preBuffers  = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, preBufferSize) }}
	connBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, connBufferSize) }}
)

// connBufferSize is the size of the buffer between a response and its
// connection, net/http's.
const connBufferSize = 4 << 10

// init prepares w for a request that detaches now, with the header map
// the handler used so far; rw says whether net/http sent the header
// already, and how.
func (w *connWriter) init(dc *detached, req *http.Request, header http.Header, rw *responseWriter) {
	w.dc, w.req, w.handlerHeader = dc, req, header
	w.chunks.w, w.out.w = w, w
	w.contentLength = -1
	if !rw.written {
		return
	}
	w.wroteHeader, w.headerSent = true, true
	w.status = int(rw.head.status)
	w.chunking = rw.head.framing == framingChunked
	if rw.head.framing == framingLength {
		w.contentLength = rw.head.contentLength
	}
	w.written = rw.body
	w.closeAfter = rw.head.closeAfter || wantsClose(req)
}

func wantsClose(r *http.Request) bool {
	return r.Close || hasToken(first(r.Header, "Connection"), "close")
}

func (w *connWriter) Header() http.Header { return w.handlerHeader }

func (w *connWriter) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.buffers()
		writeStatusLine(w.bw, code)
		_ = w.handlerHeader.WriteSubset(w.bw, excludedNoBody)
		_, _ = w.bw.WriteString("\r\n")
		_ = w.bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	w.header = w.handlerHeader.Clone()
	if cl := first(w.handlerHeader, "Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			w.handlerHeader.Del("Content-Length")
		}
	}
}

var excludedNoBody = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

func (w *connWriter) Write(p []byte) (int, error) { return w.write(len(p), p, "") }

func (w *connWriter) WriteString(s string) (int, error) { return w.write(len(s), nil, s) }

func (w *connWriter) write(n int, p []byte, s string) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if n == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(n)
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.buffers()
	if p != nil {
		return w.pre.Write(p)
	}
	return w.pre.WriteString(s)
}

// Flush implements http.Flusher; FlushError, preferred by
// http.ResponseController, reports the error.
func (w *connWriter) Flush() { _ = w.FlushError() }

func (w *connWriter) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.buffers()
	err := w.pre.Flush()
	if e := w.flushChunks(); err == nil {
		err = e
	}
	return err
}

// Hijack hands the connection to the handler, as net/http's does: the
// header and the body it framed already go out first (what sits in the
// 2 KiB before framing does not, as with net/http). The connection is no
// longer watched, and the Dispatcher neither writes to it nor closes it.
func (w *connWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.wroteHeader {
		w.buffers()
		_ = w.flushChunks()
	}
	w.hijacked = true
	w.drop()
	conn := w.dc.handOver()
	return conn, bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn)), nil
}

func (w *connWriter) SetReadDeadline(t time.Time) error  { return w.dc.conn.SetReadDeadline(t) }
func (w *connWriter) SetWriteDeadline(t time.Time) error { return w.dc.conn.SetWriteDeadline(t) }

// EnableFullDuplex succeeds without doing anything: a request detaches
// only once its body has been read to the end.
func (w *connWriter) EnableFullDuplex() error { return nil }

// park readies the response for a wait: what the dispatch wrote goes out
// (a response whose header is not written yet stays unwritten), and the
// buffers go back to their pools.
func (w *connWriter) park() {
	if w.hijacked {
		return
	}
	if w.wroteHeader {
		_ = w.FlushError()
	}
	w.release()
}

// finish ends the response, as net/http does when the handler returns,
// and reports whether the connection can carry another request.
func (w *connWriter) finish() (reusable bool) {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.buffers()
	_ = w.pre.Flush()
	w.endChunks()
	_ = w.bw.Flush()
	w.release()
	short := w.req.Method != http.MethodHead && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written
	return !w.closeAfter && !short && w.werr == nil
}

// buffers takes the buffers from their pools if w holds none.
func (w *connWriter) buffers() {
	if w.bw == nil {
		w.bw = connBuffers.Get().(*bufio.Writer)
		w.bw.Reset(&w.out)
	}
	if w.pre == nil {
		w.pre = preBuffers.Get().(*bufio.Writer)
		w.pre.Reset(&w.chunks)
	}
}

// release gives back the buffers that hold nothing, or only what can
// never be sent: once a write to the connection has failed, what they hold
// is dropped, or a client that resets its connection would leave a buffer
// with every request it ends so, for as long as its Continuation lives.
func (w *connWriter) release() {
	if w.werr != nil {
		w.discard()
	}
	if w.pre != nil && w.pre.Buffered() == 0 {
		w.pre.Reset(nil)
		preBuffers.Put(w.pre)
		w.pre = nil
	}
	if w.bw != nil && w.bw.Buffered() == 0 {
		w.bw.Reset(nil)
		connBuffers.Put(w.bw)
		w.bw = nil
	}
}

// drop gives back the buffers, discarding what they hold: the response
// will not be finished.
func (w *connWriter) drop() {
	w.discard()
	w.release()
}

// discard empties the buffers.
func (w *connWriter) discard() {
	if w.pre != nil {
		w.pre.Reset(nil)
	}
	if w.bw != nil {
		w.bw.Reset(nil)
	}
}

// chunkSink is what the pre-buffer flushes to: it writes the header
// before the first block of body, and frames each block.
type chunkSink struct{ w *connWriter }

func (s *chunkSink) Write(p []byte) (int, error) {
	w := s.w
	if !w.headerSent {
		w.writeHeader(p)
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil // eaten, as net/http does
	}
	if w.chunking {
		var size [16]byte
		_, _ = w.bw.Write(strconv.AppendInt(size[:0], int64(len(p)), 16))
		_, _ = w.bw.WriteString("\r\n")
	}
	n, err := w.bw.Write(p)
	if w.chunking && err == nil {
		_, err = w.bw.WriteString("\r\n")
	}
	return n, err
}

// connSink writes to the connection and remembers the first error: a
// connection that failed once is not reused.
type connSink struct{ w *connWriter }

func (s *connSink) Write(p []byte) (int, error) {
	w := s.w
	if w.werr != nil {
		return 0, w.werr
	}
	n, err := w.dc.conn.Write(p)
	if err != nil {
		w.werr = err
	}
	return n, err
}

func (w *connWriter) flushChunks() error {
	if !w.headerSent {
		w.writeHeader(nil)
	}
	return w.bw.Flush()
}

// endChunks writes the header if it has not gone yet and, for a chunked
// body, the last chunk and the trailers.
func (w *connWriter) endChunks() {
	if !w.headerSent {
		w.writeHeader(nil)
	}
	if !w.chunking {
		return
	}
	_, _ = w.bw.WriteString("0\r\n")
	if t := w.finalTrailers(); t != nil {
		_ = t.Write(w.bw)
	}
	_, _ = w.bw.WriteString("\r\n")
}

// writeHeader decides the framing and writes the status line and header
// into bw; p is the first block of body (nil if there is none yet), from
// which a Content-Type is sniffed and, when the request is ending, the
// Content-Length taken. The rules and their order are net/http's, for an
// HTTP/1.1 request whose body has been read to its end.
func (w *connWriter) writeHeader(p []byte) {
	w.headerSent = true
	header := w.header // ours to change: a copy taken at WriteHeader
	isHEAD := w.req.Method == http.MethodHead
	keepAlives := w.dc.keepAlives()
	var extra extraHeader

	trailers := false
	for k := range header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			delete(header, k)
			trailers = true
		}
	}
	for _, v := range header["Trailer"] {
		trailers = true
		forEachElement(v, w.declareTrailer)
	}

	te := first(header, "Transfer-Encoding")
	hasTE := te != ""
	if _, hasCLHeader := header["Content-Length"]; w.handlerDone && !trailers && !hasTE && bodyAllowedForStatus(w.status) && !hasCLHeader && (!isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		extra.contentLength = strconv.AppendInt(extra.clBuf[:0], int64(len(p)), 10)
	}
	hasCL := w.contentLength != -1

	connection := first(header, "Connection")
	if wantsClose(w.req) || hasToken(connection, "close") || !keepAlives {
		w.closeAfter = true
	}

	code := w.status
	if bodyAllowedForStatus(code) {
		_, haveType := header["Content-Type"]
		if header.Get("Content-Encoding") == "" && !haveType && !hasTE && len(p) > 0 {
			extra.contentType = http.DetectContentType(p)
		}
	} else {
		header.Del("Content-Length")
		header.Del("Transfer-Encoding")
		if code == http.StatusNotModified {
			header.Del("Content-Type")
		}
	}
	if _, ok := header["Date"]; !ok {
		extra.date = time.Now().UTC().AppendFormat(extra.dateBuf[:0], http.TimeFormat)
	}
	if hasCL && hasTE && te != "identity" {
		header.Del("Content-Length") // net/http ignores a Content-Length that comes with another Transfer-Encoding
		hasCL = false
	}

	switch {
	case isHEAD || !bodyAllowedForStatus(code):
		header.Del("Transfer-Encoding")
	case hasCL:
		header.Del("Transfer-Encoding")
	case hasTE && te == "identity":
		// The body ends when the connection closes (what Server-Sent
		// Events once recommended), so the connection does close.
		w.closeAfter = true
		header.Del("Transfer-Encoding")
	default:
		w.chunking = true
		extra.transferEncoding = "chunked"
		if hasTE && te == "chunked" {
			header.Del("Transfer-Encoding") // sent below, once
		}
	}
	if w.chunking {
		header.Del("Content-Length")
	}
	if w.closeAfter && (!keepAlives || !hasToken(connection, "close")) && !isProtocolSwitch(code, header) {
		header.Del("Connection")
		extra.connection = "close"
	}

	writeStatusLine(w.bw, code)
	_ = header.WriteSubset(w.bw, nil)
	extra.write(w.bw)
	_, _ = w.bw.WriteString("\r\n")
}

// extraHeader holds the header fields writeHeader adds, written after the
// handler's in net/http's order.
type extraHeader struct {
	date             []byte
	contentLength    []byte
	contentType      string
	connection       string
	transferEncoding string
	dateBuf          [len(http.TimeFormat)]byte
	clBuf            [20]byte
}

func (h *extraHeader) write(bw *bufio.Writer) {
	if h.date != nil {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(h.date)
		_, _ = bw.WriteString("\r\n")
	}
	if h.contentLength != nil {
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(h.contentLength)
		_, _ = bw.WriteString("\r\n")
	}
	for _, f := range [...]struct{ key, value string }{
		{"Content-Type", h.contentType},
		{"Connection", h.connection},
		{"Transfer-Encoding", h.transferEncoding},
	} {
		if f.value != "" {
			_, _ = bw.WriteString(f.key)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(f.value)
			_, _ = bw.WriteString("\r\n")
		}
	}
}

func writeStatusLine(bw *bufio.Writer, code int) {
	text := http.StatusText(code)
	if text == "" {
		_, _ = fmt.Fprintf(bw, "HTTP/1.1 %03d status code %d\r\n", code, code)
		return
	}
	var digits [3]byte
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.Write(strconv.AppendInt(digits[:0], int64(code), 10))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(text)
	_, _ = bw.WriteString("\r\n")
}

func isProtocolSwitch(code int, h http.Header) bool {
	if code != http.StatusSwitchingProtocols || h.Get("Upgrade") == "" {
		return false
	}
	for _, v := range h["Connection"] {
		if hasToken(v, "upgrade") {
			return true
		}
	}
	return false
}

// declareTrailer records a trailer the header announced, unless a
// trailer may not carry it (RFC 9110, section 6.5.1).
func (w *connWriter) declareTrailer(k string) {
	k = http.CanonicalHeaderKey(k)
	if strings.HasPrefix(k, "If-") || notATrailer[k] {
		return
	}
	w.trailers = append(w.trailers, k)
}

// notATrailer lists the fields that framing, routing, authentication,
// request modifiers and response control need before the body, so they
// never come as trailers.
var notATrailer = map[string]bool{
	"Authorization": true, "Cache-Control": true, "Connection": true, "Content-Encoding": true,
	"Content-Length": true, "Content-Range": true, "Content-Type": true, "Expect": true,
	"Host": true, "Keep-Alive": true, "Max-Forwards": true, "Pragma": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Proxy-Connection": true, "Range": true,
	"Realm": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Www-Authenticate": true,
}

// finalTrailers are the trailers to send after the last chunk: those the
// header announced, and those set under http.TrailerPrefix.
func (w *connWriter) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range w.handlerHeader {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = make(http.Header)
			}
			t[name] = vv
		}
	}
	for _, k := range w.trailers {
		for _, v := range w.handlerHeader[k] {
			if t == nil {
				t = make(http.Header)
			}
			t.Add(k, v)
		}
	}
	return t
}

// forEachElement calls fn for each element of the comma-separated list v.
func forEachElement(v string, fn func(string)) {
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			fn(f)
		}
	}
}

var (
	_ http.Flusher        = (*connWriter)(nil)
	_ http.Hijacker       = (*connWriter)(nil)
	_ http.ResponseWriter = (*connWriter)(nil)
)
