package continuation_test

// Request bodies over real sockets, HTTP/1.1 and h2c: the body is read
// before the request takes a worker and within a deadline, so a client
// that sends it slowly or never holds no worker, cannot hold Drain, and
// cannot make a waiting request deaf to its wake-ups.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

var protocols = []string{"HTTP/1.1", "h2c"}

// bodyServer serves d on loopback over proto. Every request that reaches
// the Dispatcher is announced on entered, and its end, with whether the
// Dispatcher wrote anything, on left.
type bodyServer struct {
	*httptest.Server
	client  *http.Client
	proto   string
	entered chan string // the path of each request that reaches the Dispatcher
	left    chan served
}

type served struct {
	path  string
	wrote bool
}

func newBodyServer(t *testing.T, d *continuation.Dispatcher, proto string) *bodyServer {
	t.Helper()
	s := &bodyServer{proto: proto, entered: make(chan string, 16), left: make(chan served, 16)}
	s.Server = continuationtest.NewUnstartedServer(t, d)
	s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.entered <- r.URL.Path
		rw := &wroteWriter{ResponseWriter: w}
		d.ServeHTTP(rw, r)
		s.left <- served{r.URL.Path, rw.wrote}
	})
	s.client = &http.Client{Transport: &http.Transport{}}
	if proto == "h2c" {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		s.Config.Protocols = &p
		s.client.Transport.(*http.Transport).Protocols = &p
	}
	s.Start()
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// wroteWriter records whether anything was written; Unwrap keeps
// http.ResponseController (read deadlines) working through it.
type wroteWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *wroteWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *wroteWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

func (w *wroteWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// get answers the body of a GET, or the test fails.
func (s *bodyServer) get(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	resp, err := s.client.Do(req)
	require.NoError(t, err, "GET %s", path)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// A post is a POST whose body the test sends piece by piece: over a raw
// TCP connection for HTTP/1.1 (net/http's client would buffer the pieces),
// over net/http's client for h2c (which sends each piece as it comes).
type post struct {
	conn   net.Conn       // HTTP/1.1
	body   *io.PipeWriter // h2c
	unsent int            // bytes of the announced body not sent yet
	cancel context.CancelFunc
	answer chan answer
}

type answer struct {
	code   int
	header http.Header
	body   string
	close  bool // HTTP/1.1: the answer said Connection: close
	closed bool // HTTP/1.1: and the server closed the connection after it
	err    error
}

// startPost sends the header of a POST announcing size bytes of body.
func (s *bodyServer) startPost(t *testing.T, path string, size int) *post {
	t.Helper()
	p := &post{unsent: size, answer: make(chan answer, 1)}
	if s.proto == "HTTP/1.1" {
		conn, err := net.Dial("tcp", s.Listener.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		p.conn = conn
		_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", path, size)
		require.NoError(t, err)
		go p.readAnswer()
		return p
	}
	var ctx context.Context
	ctx, p.cancel = context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	p.body = pw
	t.Cleanup(func() { pw.Close(); p.cancel() })
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+path, pr)
	req.ContentLength = int64(size)
	go func() {
		resp, err := s.client.Do(req)
		if err != nil {
			p.answer <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		p.answer <- answer{code: resp.StatusCode, header: resp.Header, body: string(b), err: err}
	}()
	return p
}

func (p *post) readAnswer() {
	br := bufio.NewReader(p.conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		p.answer <- answer{err: err}
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a := answer{code: resp.StatusCode, header: resp.Header, body: string(b), close: resp.Close, err: err}
	if a.close {
		p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = br.ReadByte()
		// A reset is a close too: the server closes a connection with
		// body still unread on it (a request refused before its body was
		// read), and then the kernel sends RST instead of FIN.
		a.closed = errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	}
	p.answer <- a
}

// send sends the next piece of the body.
func (p *post) send(t *testing.T, piece string) {
	t.Helper()
	var err error
	p.unsent -= len(piece)
	if p.conn != nil {
		_, err = io.WriteString(p.conn, piece)
	} else {
		_, err = io.WriteString(p.body, piece)
		if p.unsent == 0 {
			p.body.Close() // net/http's client waits for the end before it sends the last piece
		}
	}
	require.NoError(t, err)
}

// disconnect is the client going away in the middle of its body.
func (p *post) disconnect() {
	if p.conn != nil {
		p.conn.Close()
	} else {
		p.cancel()
	}
}

// wait returns the answer, or fails the test if none comes in 30 s.
func (p *post) wait(t *testing.T) answer {
	t.Helper()
	select {
	case a := <-p.answer:
		require.NoError(t, a.err)
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the POST")
		return answer{}
	}
}

// pending reports whether the POST has not been answered yet.
func (p *post) pending() bool { return len(p.answer) == 0 }

// echo answers a POST with the body it read, and anything else with "ok".
func echo(calls chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls != nil {
			calls <- r.URL.Path
		}
		if r.Method != http.MethodPost {
			io.WriteString(w, "ok")
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(b)
	})
}

// A POST announcing 100 bytes of body and sending 6 holds no worker: with
// one worker, another route answers meanwhile, and so does a POST that
// sends its whole body late. It never reaches the handler: when its
// deadline passes it gets 408, and the connection closes.
func TestSlowBodyHoldsNoWorker(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			calls := make(chan string, 16)
			d := continuation.NewDispatcher(echo(calls),
				continuation.WithWorkers(1), continuation.WithBodyTimeout(time.Second))
			s := newBodyServer(t, d, proto)

			stalled := s.startPost(t, "/stalled", 100)
			stalled.send(t, "abcdef")
			late := s.startPost(t, "/late", 10)
			late.send(t, "01234")
			require.ElementsMatch(t, []string{"/stalled", "/late"}, []string{<-s.entered, <-s.entered})

			assert.Equal(t, "ok", s.get(t, "/other"), "another route answers")
			assert.True(t, stalled.pending(), "the stalled POST was answered before its deadline")
			late.send(t, "56789")
			a := late.wait(t)
			assert.Equal(t, http.StatusOK, a.code)
			assert.Equal(t, "0123456789", a.body)

			a = stalled.wait(t)
			assert.Equal(t, http.StatusRequestTimeout, a.code)
			if proto == "HTTP/1.1" {
				assert.True(t, a.close, "Connection: close")
				assert.True(t, a.closed, "connection closed after the 408")
			}
			close(calls)
			var paths []string
			for p := range calls {
				paths = append(paths, p)
			}
			assert.Equal(t, []string{"/other", "/late"}, paths, "requests that reached the handler")
		})
	}
}

// Drain is not held by a request still waiting for its body: the request
// gets 503 with Retry-After, its connection closes, and Shutdown returns.
func TestDrainInterruptsBodyRead(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			calls := make(chan string, 16)
			d := continuation.NewDispatcher(echo(calls), continuation.WithBodyTimeout(time.Hour),
				continuation.WithLogger(discardLogger()))
			s := newBodyServer(t, d, proto)
			p := s.startPost(t, "/stalled", 100)
			p.send(t, "abcdef")
			<-s.entered

			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			require.NoError(t, d.Shutdown(ctx))
			a := p.wait(t)
			assert.Equal(t, http.StatusServiceUnavailable, a.code)
			assert.Equal(t, "1", a.header.Get("Retry-After"))
			if proto == "HTTP/1.1" {
				assert.True(t, a.closed, "connection closed after the 503")
			}
			assert.Empty(t, calls, "the POST reached the handler")
		})
	}
}

// A client that goes away in the middle of its body is abandoned without
// an answer and never reaches the handler.
func TestClientGoneMidBody(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			calls := make(chan string, 16)
			d := continuation.NewDispatcher(echo(calls), continuation.WithBodyTimeout(time.Hour))
			s := newBodyServer(t, d, proto)
			p := s.startPost(t, "/gone", 100)
			p.send(t, "abcdef")
			<-s.entered
			p.disconnect()
			select {
			case left := <-s.left:
				assert.False(t, left.wrote, "answered a client that left")
			case <-time.After(30 * time.Second):
				t.Fatal("the Dispatcher did not notice the client left")
			}
			assert.Empty(t, calls)
		})
	}
}

// A handler that reads part of a body longer than the buffer and then
// suspends waits like any other: it expires on time, Resume wakes it, and
// Shutdown answers it and returns, while the rest of its body never comes.
func TestSuspendWithBodyUnread(t *testing.T) {
	for _, proto := range protocols {
		for _, end := range []string{"expiry", "resume", "shutdown"} {
			t.Run(proto+"/"+end, func(t *testing.T) {
				suspended := make(chan *continuation.Continuation, 1)
				d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					c := continuation.FromRequest(r)
					switch {
					case c.IsExpired():
						io.WriteString(w, "expired")
						return
					case c.IsResumed():
						io.WriteString(w, "resumed")
						return
					}
					head := make([]byte, 20) // 16 from memory, 4 from the connection
					_, err := io.ReadFull(r.Body, head)
					require.NoError(t, err)
					require.Equal(t, strings.Repeat("x", 20), string(head))
					c.SetTimeout(0)
					if end == "expiry" {
						c.SetTimeout(200 * time.Millisecond)
					}
					require.NoError(t, c.Suspend())
					suspended <- c
				}), continuation.WithBodyBuffer(16), continuation.WithBodyTimeout(time.Hour))
				s := newBodyServer(t, d, proto)
				p := s.startPost(t, "/", 100)
				p.send(t, strings.Repeat("x", 40))
				c := <-suspended

				switch end {
				case "resume":
					require.NoError(t, c.Resume())
				case "shutdown":
					ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
					defer cancel()
					require.NoError(t, d.Shutdown(ctx), "Shutdown held by a request with body to come")
				}
				a := p.wait(t)
				assert.Equal(t, http.StatusOK, a.code)
				assert.Equal(t, map[string]string{"expiry": "expired", "resume": "resumed", "shutdown": "expired"}[end], a.body)
				if proto == "HTTP/1.1" {
					assert.True(t, a.closed, "the connection, with 60 bytes of body to come, closed after the answer")
				}
				<-c.Done()
				assert.Zero(t, d.Suspended())
			})
		}
	}
}

// A body the Dispatcher read ahead reads the same to the handler: whole
// when it fits the buffer, the buffer then the rest when it does not, and
// http.MaxBytesReader put on it by the handler still stops it.
func TestBodyReadsWhole(t *testing.T) {
	long := strings.Repeat("0123456789", 1000)
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/limited" {
					r.Body = http.MaxBytesReader(w, r.Body, 10)
				}
				echo(nil).ServeHTTP(w, r)
			}), continuation.WithBodyBuffer(1000))
			s := newBodyServer(t, d, proto)
			for _, body := range []string{"short", long} {
				resp, err := s.client.Post(s.URL+"/", "text/plain", strings.NewReader(body))
				require.NoError(t, err)
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.Equal(t, body, string(b))
			}
			resp, err := s.client.Post(s.URL+"/limited", "text/plain", strings.NewReader(long))
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
			assert.Contains(t, string(b), "request body too large")
		})
	}
}

// The rest of a body longer than the buffer is under the same deadline,
// so even a handler reading a slow large body holds its worker for a
// bounded time: its read fails with os.ErrDeadlineExceeded.
func TestStreamedBodyDeadline(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			readErr := make(chan error, 1)
			d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				readErr <- err
				w.WriteHeader(http.StatusRequestTimeout)
			}), continuation.WithBodyBuffer(16), continuation.WithBodyTimeout(500*time.Millisecond))
			s := newBodyServer(t, d, proto)
			p := s.startPost(t, "/", 100)
			p.send(t, strings.Repeat("x", 40))
			select {
			case err := <-readErr:
				assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
			case <-time.After(30 * time.Second):
				t.Fatal("the handler's read of a stalled body never ended")
			}
			assert.Equal(t, http.StatusRequestTimeout, p.wait(t).code)
		})
	}
}

// Which waiting requests hear of a disconnect: on HTTP/1.1 net/http
// watches the connection only once the body has been read to its end. A
// body the Dispatcher read ahead whole is heard at once (see also
// TestDisconnectDetectedOverLoopback); a request that waits with body
// still on the connection ends by its timeout instead, as the package doc
// says.
func TestDisconnectWithBodyUnread(t *testing.T) {
	var hist history
	parked := make(chan struct{}, 1)
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsInitial() {
			c.SetTimeout(300 * time.Millisecond)
			c.AddListener(recordingListener(&hist))
			require.NoError(t, c.Suspend())
			parked <- struct{}{}
			return
		}
		hist.add("redispatch")
	}), continuation.WithBodyBuffer(8))
	s := newBodyServer(t, d, "HTTP/1.1")
	p := s.startPost(t, "/", 100)
	p.send(t, strings.Repeat("x", 100)) // all of it, but the handler reads none
	<-parked
	p.disconnect()
	<-s.left
	assert.Equal(t, []string{"onTimeout", "redispatch", "onComplete"}, hist.get())
}

// A request without a body costs no read deadline; one with a body gets
// one, set before the handler runs, through any wrapper with Unwrap.
func TestNoBodyNoDeadline(t *testing.T) {
	d := continuation.NewDispatcher(echo(nil))
	for _, tt := range []struct {
		method string
		body   io.Reader
		want   int
	}{
		{http.MethodGet, nil, 0},
		{http.MethodPost, strings.NewReader("hello"), 1},
	} {
		w := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
		d.ServeHTTP(&wroteWriter{ResponseWriter: w}, httptest.NewRequest(tt.method, "/", tt.body))
		assert.Equal(t, http.StatusOK, w.Code)
		assert.Equal(t, tt.want, w.deadlines, "read deadlines set for a %s", tt.method)
	}
}

// deadlineRecorder is a recorder that supports read deadlines, counting
// them.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	deadlines int
}

func (w *deadlineRecorder) SetReadDeadline(time.Time) error {
	w.deadlines++
	return nil
}

// With no buffer, every body streams to the handler, whole.
func TestNoBodyBuffer(t *testing.T) {
	d := continuation.NewDispatcher(echo(nil), continuation.WithBodyBuffer(0))
	rec := do(d, http.MethodPost, "/", strings.NewReader("streamed")).Wait()
	assert.Equal(t, "streamed", rec.Body.String())
}

// A handler that hijacks the connection owns what is left of the body on
// it: the Dispatcher does not cut it short when the request ends.
func TestHijackKeepsUnreadBody(t *testing.T) {
	type hijacked struct {
		conn net.Conn
		brw  *bufio.ReadWriter
	}
	conns := make(chan hijacked, 1)
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		head := make([]byte, 8)
		_, err := io.ReadFull(r.Body, head)
		require.NoError(t, err)
		conn, brw, err := http.NewResponseController(w).Hijack()
		require.NoError(t, err)
		conns <- hijacked{conn, brw}
	}), continuation.WithBodyBuffer(8))
	s := newBodyServer(t, d, "HTTP/1.1")
	p := s.startPost(t, "/", 20)
	p.send(t, "01234567")
	h := <-conns
	defer h.conn.Close()
	<-s.left // ServeHTTP has returned
	p.send(t, "89abcdefghij")
	rest := make([]byte, 12)
	_, err := io.ReadFull(h.brw, rest)
	require.NoError(t, err, "reading the rest of the body from the hijacked connection")
	assert.Equal(t, "89abcdefghij", string(rest))
}
