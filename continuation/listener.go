package continuation

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"weak"
)

// ListenAndServe is srv.ListenAndServe with detaching: it listens on
// srv.Addr (":http" if empty) and calls [Serve]. It always returns a
// non-nil error, http.ErrServerClosed after srv's Shutdown or Close.
func ListenAndServe(srv *http.Server) error {
	ln, err := listen(srv, ":http")
	if err != nil {
		return err
	}
	return Serve(srv, ln)
}

// listen listens on srv.Addr, or on otherwise if that is empty.
func listen(srv *http.Server, otherwise string) (net.Listener, error) {
	addr := srv.Addr
	if addr == "" {
		addr = otherwise
	}
	return net.Listen("tcp", addr)
}

// Serve is srv.Serve(ln) with detaching: a request served through a
// Dispatcher on one of these connections detaches from net/http while it
// waits, when it can (see the package doc, "Detaching"). The listener is
// closed when Serve returns.
func Serve(srv *http.Server, ln net.Listener) error {
	dl := DetachingListener(srv, ln)
	defer dl.Close()
	return srv.Serve(dl)
}

// ListenAndServeTLS is srv.ListenAndServeTLS with detaching: it listens on
// srv.Addr (":https" if empty) and calls [ServeTLS].
func ListenAndServeTLS(srv *http.Server, certFile, keyFile string) error {
	ln, err := listen(srv, ":https")
	if err != nil {
		return err
	}
	return ServeTLS(srv, ln, certFile, keyFile)
}

// ServeTLS is srv.ServeTLS(ln, certFile, keyFile) with detaching. As with
// net/http, the certificate comes from the files, or from srv.TLSConfig
// when both names are empty, and HTTP/2 is offered unless srv's
// Protocols or TLSNextProto rule it out (as net/http's ServeTLS, it adds
// "h2" to srv.TLSConfig's NextProtos for that, on a copy); HTTP/2
// requests wait attached. The listener is closed when ServeTLS returns.
func ServeTLS(srv *http.Server, ln net.Listener, certFile, keyFile string) error {
	cfg, err := serverTLSConfig(srv, certFile, keyFile)
	if err != nil {
		ln.Close()
		return err
	}
	return Serve(srv, tls.NewListener(ln, cfg))
}

// serverTLSConfig is the tls.Config that http.Server.ServeTLS would use:
// srv's (copied), with NextProtos offering what srv serves and the
// certificate loaded from the files. The TLS listener has to be made here,
// because a DetachingListener goes outside it: net/http needs the
// *tls.Conn that it accepts, and a detached request's connection goes
// back to the Server as it came.
func serverTLSConfig(srv *http.Server, certFile, keyFile string) (*tls.Config, error) {
	protocols := serverProtocols(srv)
	cfg := &tls.Config{}
	if srv.TLSConfig != nil {
		cfg = srv.TLSConfig.Clone()
		if protocols.HTTP2() && !slices.Contains(srv.TLSConfig.NextProtos, "h2") {
			// http.Server.Serve sets HTTP/2 up only if the Server's own
			// TLSConfig offers it (ServeTLS adds it there, as here).
			srv.TLSConfig = cfg.Clone()
			srv.TLSConfig.NextProtos = append(srv.TLSConfig.NextProtos, "h2")
		}
	}
	var next []string
	for _, p := range cfg.NextProtos {
		if p != "h2" && p != "http/1.1" {
			next = append(next, p)
		}
	}
	if protocols.HTTP2() {
		next = append(next, "h2")
	}
	if protocols.HTTP1() {
		next = append(next, "http/1.1")
	}
	cfg.NextProtos = next
	hasCert := len(cfg.Certificates) > 0 || cfg.GetCertificate != nil || cfg.GetConfigForClient != nil
	if !hasCert || certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// serverProtocols is the set of protocols srv serves over TLS, by
// net/http's rules: srv.Protocols if set; else HTTP/1 and, unless
// TLSNextProto is set without "h2" or GODEBUG has http2server=0, HTTP/2.
func serverProtocols(srv *http.Server) http.Protocols {
	if srv.Protocols != nil {
		return *srv.Protocols
	}
	_, hasH2 := srv.TLSNextProto["h2"]
	off := srv.TLSNextProto != nil && !hasH2
	if !hasH2 && slices.Contains(strings.Split(os.Getenv("GODEBUG"), ","), "http2server=0") {
		off = true
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(!off)
	return p
}

// DetachingListener returns ln wrapped so that requests srv accepts from
// it can detach, for a server started some other way than [Serve] (an
// httptest.Server, say: set its Listener to this before Start). srv must
// serve the result, which it must do over plain TCP or over TLS made
// inside it (tls.NewListener(ln) as ln): a detached request's connection
// goes back to srv through this listener's Accept, so srv sees it as a new
// connection.
//
// It sets srv.BaseContext and srv.ConnState, wrapping any set before,
// once per Server: do not change them afterwards, and call it before srv
// serves. Closing the listener (srv.Shutdown does) stops its accept
// goroutine and closes the connections handed back that have not begun
// another request, as srv.Shutdown closes idle ones (to the Server they
// are new, and it would wait seconds for them); connections of detached
// requests that finish after that are closed instead of handed back.
func DetachingListener(srv *http.Server, ln net.Listener) net.Listener {
	markServer(srv)
	l := &detachingListener{
		Listener: ln,
		accepted: make(chan accepted),
		queued:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		failed:   make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	l.pollable.Store(true)
	return l
}

// listenerKey is the context key under which a request finds the
// detachingListener its connection came from.
type listenerKey struct{}

// markedServers holds the Servers whose BaseContext tells the listener.
var markedServers struct {
	sync.Mutex
	m map[weak.Pointer[http.Server]]bool
}

// markServer makes srv's BaseContext put a detachingListener in the
// contexts of the requests accepted from it (one context value per
// listener, nothing per connection), and its ConnState tell when a
// connection handed back has begun a request. Each Server is changed once,
// under a lock, so that DetachingListeners made for one Server from
// several goroutines do not race; the record of it goes with the Server.
func markServer(srv *http.Server) {
	markedServers.Lock()
	defer markedServers.Unlock()
	key := weak.Make(srv)
	if markedServers.m[key] {
		return
	}
	if markedServers.m == nil {
		markedServers.m = make(map[weak.Pointer[http.Server]]bool)
	}
	markedServers.m[key] = true
	runtime.AddCleanup(srv, func(key weak.Pointer[http.Server]) {
		markedServers.Lock()
		delete(markedServers.m, key)
		markedServers.Unlock()
	}, key)
	base := srv.BaseContext
	srv.BaseContext = func(ln net.Listener) context.Context {
		ctx := context.Background()
		if base != nil {
			if ctx = base(ln); ctx == nil {
				return nil // for http.Server.Serve to say what is wrong
			}
		}
		if l, ok := ln.(*detachingListener); ok {
			ctx = context.WithValue(ctx, listenerKey{}, l)
		}
		return ctx
	}
	state := srv.ConnState
	srv.ConnState = func(conn net.Conn, s http.ConnState) {
		if s != http.StateNew {
			handedBack.Delete(conn)
		}
		if state != nil {
			state(conn, s)
		}
	}
}

// handedBack holds the connections handed back that the Server has not yet
// read a request from, with the listener each came through.
var handedBack sync.Map

// detachingListener is what DetachingListener returns: Accept gives the
// Server both the connections of the listener inside and those that
// Dispatchers hand back. One goroutine accepts from the listener inside,
// when Accept asks for a connection, so that Accept can also wait for
// connections handed back; Close stops it.
type detachingListener struct {
	net.Listener
	accepted chan accepted // from the accept goroutine
	queued   chan struct{} // a connection was handed back
	done     chan struct{} // closed by Close
	failed   chan struct{} // closed when the listener inside failed for good
	stopped  chan struct{} // closed when the accept goroutine has returned

	start     sync.Once
	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	handed   []net.Conn // handed back, in order; Accept takes from the front
	closed   bool
	err      error // why the listener inside failed
	pollable atomic.Bool
}

type accepted struct {
	conn net.Conn
	err  error
}

func (l *detachingListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	for {
		l.mu.Lock()
		if len(l.handed) > 0 {
			conn := l.handed[0]
			l.handed[0] = nil
			l.handed = l.handed[1:]
			if len(l.handed) == 0 {
				l.handed = l.handed[:0:0] // let the array go
			}
			l.mu.Unlock()
			return conn, nil
		}
		l.mu.Unlock()
		select {
		case a := <-l.accepted:
			if a.err == nil && !watchable(a.conn) {
				l.pollable.Store(false)
			}
			return a.conn, a.err
		case <-l.queued:
		case <-l.failed:
			return nil, l.err
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

// acceptLoop accepts connections from the listener inside and hands each
// to the next Accept, holding at most one, accepted ahead, until Accept
// asks (so that Accept can also wait for connections handed back). A
// temporary error is passed on (the Server waits and asks again); another
// ends the loop, and Accept returns it from then on.
func (l *detachingListener) acceptLoop() {
	defer close(l.stopped)
	for {
		conn, err := l.Listener.Accept()
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Temporary()) { //nolint:staticcheck // Temporary is what http.Server.Serve goes by
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			close(l.failed)
			return
		}
		select {
		case l.accepted <- accepted{conn, err}:
		case <-l.done:
			if conn != nil {
				conn.Close()
			}
			return
		}
	}
}

// Close closes the listener inside, stops the accept goroutine and closes
// the connections handed back that have not begun a request.
func (l *detachingListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
		l.mu.Lock()
		l.closed = true
		l.handed = nil // all of them are in handedBack too
		l.mu.Unlock()
		handedBack.Range(func(conn, owner any) bool {
			if owner == l {
				handedBack.Delete(conn)
				conn.(net.Conn).Close()
			}
			return true
		})
		started := true
		l.start.Do(func() { started = false })
		if started {
			<-l.stopped
		}
	})
	return l.closeErr
}

// handBack gives the Server a connection whose detached request has
// ended, for its next request; once the listener is closed, the
// connection is closed instead.
func (l *detachingListener) handBack(conn net.Conn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		conn.Close()
		return
	}
	handedBack.Store(conn, l) // before the Server can see it
	l.handed = append(l.handed, conn)
	l.mu.Unlock()
	select {
	case l.queued <- struct{}{}:
	default: // Accept has a token already
	}
}

func (l *detachingListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// watchable reports whether a poller can watch conn: whether it is a
// socket (under TLS) that gives its file descriptor. A listener that
// wraps its connections in types that do not (a limit, say) keeps its
// requests attached, so that they still hear of their client leaving.
func watchable(conn net.Conn) bool {
	_, ok := socketOf(conn).(syscall.Conn)
	return ok
}

// socketOf returns the connection that carries conn: for TLS, the one
// underneath, whose readiness is the TLS connection's.
func socketOf(conn net.Conn) net.Conn {
	if tc, ok := conn.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return conn
}

// prefixConn is a connection handed back with bytes of the next request
// that net/http had already read from it (pipelining): Read gives those
// first. Over TLS none is needed: a *tls.Conn cannot be wrapped (net/http
// looks for that type), so a detached TLS connection with such bytes is
// closed after its response instead (see detach).
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// SyscallConn gives the socket, so that the connection's next request can
// detach in its turn.
func (c *prefixConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// CloseWrite lets net/http half-close the connection, as it does to a
// *net.TCPConn before closing one whose request body it did not read.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
