package servlet_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/servlet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quiet keeps the Dispatcher's log of refused requests out of the test
// output.
var quiet = continuation.WithLogger(slog.New(slog.DiscardHandler))

type getPost struct{}

func (getPost) DoGet(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Servlet", "get")
	io.WriteString(w, "got")
}
func (getPost) DoPost(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "posted") }

func serve(h http.Handler, method, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func TestHandlerMethodDispatch(t *testing.T) {
	h := servlet.Handler(getPost{})
	rec := serve(h, http.MethodGet, "/")
	assert.Equal(t, "got", rec.Body.String())

	rec = serve(h, http.MethodHead, "/")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "get", rec.Header().Get("X-Servlet"), "HEAD runs DoGet")
	assert.Empty(t, rec.Body.String(), "without the body")

	assert.Equal(t, "posted", serve(h, http.MethodPost, "/").Body.String())

	rec = serve(h, http.MethodOptions, "/")
	assert.Equal(t, http.StatusNoContent, rec.Code)
	assert.Equal(t, "GET, HEAD, POST, OPTIONS", rec.Header().Get("Allow"))

	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch, "BREW"} {
		rec = serve(h, m, "/")
		assert.Equal(t, http.StatusMethodNotAllowed, rec.Code, m)
		assert.Equal(t, "GET, HEAD, POST, OPTIONS", rec.Header().Get("Allow"), m)
		assert.Equal(t, "method not allowed\n", rec.Body.String())
	}
}

type everything struct{ getPost }

func (everything) DoPut(w http.ResponseWriter, r *http.Request)     { io.WriteString(w, "put") }
func (everything) DoDelete(w http.ResponseWriter, r *http.Request)  { io.WriteString(w, "deleted") }
func (everything) DoPatch(w http.ResponseWriter, r *http.Request)   { io.WriteString(w, "patched") }
func (everything) DoHead(w http.ResponseWriter, r *http.Request)    { w.Header().Set("X-Head", "own") }
func (everything) DoOptions(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "options") }

func TestHandlerEveryMethod(t *testing.T) {
	h := servlet.Handler(everything{})
	for m, want := range map[string]string{http.MethodPut: "put", http.MethodDelete: "deleted",
		http.MethodPatch: "patched", http.MethodOptions: "options"} {
		assert.Equal(t, want, serve(h, m, "/").Body.String(), m)
	}
	assert.Equal(t, "own", serve(h, http.MethodHead, "/").Header().Get("X-Head"), "DoHead wins over DoGet")
}

func TestHandlerPassesHTTPHandlerThrough(t *testing.T) {
	h := servlet.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Method) }))
	assert.Equal(t, "DELETE", serve(h, http.MethodDelete, "/").Body.String())
}

// named answers with its own name, so tests see which servlet matched.
type named string

func (n named) ServeHTTP(w http.ResponseWriter, r *http.Request) { io.WriteString(w, string(n)) }

func startedContainer(t *testing.T, patterns ...string) *servlet.Container {
	t.Helper()
	c := servlet.NewContainer()
	for _, p := range patterns {
		c.Handle(p, named(p))
	}
	require.NoError(t, c.Start())
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	return c
}

// The Servlet specification's precedence: exact, longest prefix,
// extension, default.
func TestPatternPrecedence(t *testing.T) {
	c := startedContainer(t, "/", "/catalog", "/catalog/*", "/catalog/racecar/*", "*.bop", "/foo/bar/*", "/baz/*")
	tests := map[string]string{
		"/catalog":                "/catalog",           // exact beats prefix
		"/catalog/index.html":     "/catalog/*",         // prefix
		"/catalog/racecar.bop":    "/catalog/*",         // prefix beats extension
		"/catalog/racecar/x.bop":  "/catalog/racecar/*", // longest prefix
		"/catalog/racecar":        "/catalog/racecar/*", // a prefix matches its own path
		"/index.bop":              "*.bop",              // extension
		"/foo/bar/index.html":     "/foo/bar/*",
		"/foo/bar/index.bop":      "/foo/bar/*",
		"/baz":                    "/baz/*",
		"/bazooka":                "/", // a prefix matches whole segments only
		"/a/b.bop/c":              "/", // extension of the last segment only
		"/anything/else":          "/", // default
		"/catalog/racecarx/y.bop": "/catalog/*",
	}
	for path, want := range tests {
		assert.Equal(t, want, serve(c, http.MethodGet, path).Body.String(), path)
	}
}

func TestNoMatchIs404(t *testing.T) {
	c := startedContainer(t, "/exact", "*.jsp")
	assert.Equal(t, http.StatusNotFound, serve(c, http.MethodGet, "/other").Code)
	assert.Equal(t, "/exact", serve(c, http.MethodGet, "/exact").Body.String())
}

func TestBadPatternsFailStart(t *testing.T) {
	for _, p := range []string{"", "relative", "/a*/b", "*.", "*.a/b", "/a/*/b"} {
		c := servlet.NewContainer()
		c.Handle(p, named("x"))
		err := c.Start()
		assert.ErrorContains(t, err, "invalid pattern", "%q", p)
	}
	c := servlet.NewContainer()
	c.Handle("/a", named("1"))
	c.Handle("/a", named("2"))
	assert.ErrorContains(t, c.Start(), `pattern "/a" mapped twice`)
}

// lifecycle records Init and Destroy.
type lifecycle struct {
	name    string
	log     *[]string
	mu      *sync.Mutex
	initErr error
	config  servlet.Config
}

func (l *lifecycle) Init(cfg servlet.Config) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.config = cfg
	*l.log = append(*l.log, "init "+l.name)
	return l.initErr
}

func (l *lifecycle) Destroy() {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.log = append(*l.log, "destroy "+l.name)
}

func (l *lifecycle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cont := continuation.FromRequest(r)
	if cont.IsInitial() {
		cont.Suspend() // waits until Shutdown expires it
		return
	}
	io.WriteString(w, "bye from "+l.name)
}

func TestInitErrorStopsStart(t *testing.T) {
	var log []string
	var mu sync.Mutex
	c := servlet.NewContainer()
	c.Handle("/a", &lifecycle{name: "a", log: &log, mu: &mu})
	c.Handle("/b", &lifecycle{name: "b", log: &log, mu: &mu, initErr: errors.New("no database")})
	c.Handle("/c", &lifecycle{name: "c", log: &log, mu: &mu})
	err := c.Start()
	assert.EqualError(t, err, `servlet: init "/b": no database`)
	assert.Equal(t, []string{"init a", "init b", "destroy a"}, log)
	rec := serve(c, http.MethodGet, "/a")
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
}

// Shutdown drains suspended requests, then destroys the servlets; init
// parameters reach Init.
func TestShutdownDrainsThenDestroys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log []string
		var mu sync.Mutex
		a := &lifecycle{name: "a", log: &log, mu: &mu}
		c := servlet.NewContainer()
		c.HandleWith("/a/*", a, map[string]string{"greeting": "hi"})
		c.Handle("/b", &lifecycle{name: "b", log: &log, mu: &mu})
		require.NoError(t, c.Start())
		assert.Equal(t, servlet.Config{Pattern: "/a/*", InitParams: map[string]string{"greeting": "hi"}}, a.config)
		assert.Equal(t, "hi", a.config.InitParam("greeting"))

		done := make(chan *httptest.ResponseRecorder)
		go func() { done <- serve(c, http.MethodGet, "/a/x") }()
		synctest.Wait() // suspended
		require.NoError(t, c.Shutdown(t.Context()))
		assert.Equal(t, "bye from a", (<-done).Body.String())
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"init a", "init b", "destroy b", "destroy a"}, log)
	})
}

// Filters wrap the servlets in order, on every dispatch.
func TestFiltersOnEveryDispatch(t *testing.T) {
	var mu sync.Mutex
	var trace []string
	filter := func(name string) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				trace = append(trace, name)
				mu.Unlock()
				next.ServeHTTP(w, r)
			})
		}
	}
	c := servlet.NewContainer()
	c.Use(filter("outer"), filter("inner"))
	c.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cont := continuation.FromRequest(r)
		mu.Lock()
		trace = append(trace, "servlet")
		mu.Unlock()
		if cont.IsInitial() {
			cont.Suspend()
			cont.Resume()
		}
	}))
	require.NoError(t, c.Start())
	defer c.Shutdown(context.Background())
	serve(c, http.MethodGet, "/")
	assert.Equal(t, []string{"outer", "inner", "servlet", "outer", "inner", "servlet"}, trace)
	assert.PanicsWithValue(t, "servlet: Use after Start", func() { c.Use(filter("late")) })
	assert.PanicsWithValue(t, `servlet: Handle("/late") after Start`, func() { c.Handle("/late", named("late")) })
}

type (
	misspelled   struct{}
	wrongCase    struct{}
	wrongSig     struct{}
	pointerOnly  struct{}
	wrongServe   struct{}
	justAHelper  struct{}
	alsoAHandler struct{ named }
)

func (misspelled) DoGett(w http.ResponseWriter, r *http.Request)    {}
func (wrongCase) Doget(w http.ResponseWriter, r *http.Request)      {}
func (wrongSig) DoGet(w http.ResponseWriter, r *http.Request) error { return nil }
func (*pointerOnly) DoGet(w http.ResponseWriter, r *http.Request)   {}
func (wrongServe) ServeHTTP(w http.ResponseWriter)                  {}
func (justAHelper) Render(w http.ResponseWriter, r *http.Request)   {}
func (alsoAHandler) DoPost(w http.ResponseWriter, r *http.Request)  { io.WriteString(w, "do") }

// A value that is neither an http.Handler nor has a Do* method would
// answer every request 405: Start refuses it, naming the pattern and what
// was probably meant, and Handler panics with the same words.
func TestNotAServlet(t *testing.T) {
	const none = "it is not an http.Handler and has none of the methods DoGet, DoHead, DoPost, DoPut, DoDelete, DoPatch, DoOptions"
	for _, tt := range []struct {
		servlet any
		want    string
	}{
		{42, "int is not a servlet: " + none},
		{nil, "<nil> is not a servlet: " + none},
		{"/b", "string is not a servlet: " + none},
		{misspelled{}, "servlet_test.misspelled is not a servlet: " + none + "; its method DoGett looks like a misspelled Do* method"},
		{wrongCase{}, "servlet_test.wrongCase is not a servlet: " + none + "; its method Doget looks like a misspelled DoGet"},
		{wrongSig{}, "servlet_test.wrongSig is not a servlet: " + none +
			"; its DoGet is func(http.ResponseWriter, *http.Request) error, not func(http.ResponseWriter, *http.Request)"},
		{pointerOnly{}, "servlet_test.pointerOnly is not a servlet: " + none + "; *servlet_test.pointerOnly has the methods: pass a pointer"},
		{wrongServe{}, "servlet_test.wrongServe is not a servlet: " + none +
			"; its ServeHTTP is func(http.ResponseWriter), not func(http.ResponseWriter, *http.Request)"},
		{justAHelper{}, "servlet_test.justAHelper is not a servlet: " + none},
	} {
		c := servlet.NewContainer()
		c.Handle("/a", named("a"))
		c.Handle("/b", tt.servlet)
		assert.EqualError(t, c.Start(), `servlet: pattern "/b": `+tt.want)
		assert.Equal(t, http.StatusServiceUnavailable, serve(c, http.MethodGet, "/a").Code, "not started")
		assert.PanicsWithValue(t, "servlet: "+tt.want, func() { servlet.Handler(tt.servlet) })
	}

	// The Do* methods win over ServeHTTP; a pointer has its value's methods.
	assert.Equal(t, "do", serve(servlet.Handler(alsoAHandler{}), http.MethodPost, "/").Body.String())
	assert.Equal(t, http.StatusMethodNotAllowed, serve(servlet.Handler(alsoAHandler{}), http.MethodGet, "/").Code)
	assert.Equal(t, http.StatusOK, serve(servlet.Handler(&pointerOnly{}), http.MethodGet, "/").Code)
	assert.Equal(t, "posted", serve(servlet.Handler(&getPost{}), http.MethodPost, "/").Body.String())
}

func TestNilFilterFailsStart(t *testing.T) {
	c := servlet.NewContainer()
	c.Use(nil)
	c.Handle("/", named("x"))
	assert.EqualError(t, c.Start(), "servlet: Use: a nil filter")
}

// expiring suspends and, once expired, answers after the test lets it.
type expiring struct {
	release chan struct{}
	destroy chan struct{}
}

func (e *expiring) DoGet(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsExpired() {
		<-e.release
		io.WriteString(w, "expired")
		return
	}
	c.Suspend()
}

func (e *expiring) Destroy() { close(e.destroy) }

// Drain begins the shutdown and returns while requests are still being
// answered: suspended ones are expired and answer, new ones get 503.
// Destroy waits for Shutdown, which waits for every request.
func TestDrainReturnsAtOnceShutdownWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &expiring{release: make(chan struct{}), destroy: make(chan struct{})}
		c := servlet.NewContainer(continuation.WithDefaultTimeout(0), quiet)
		c.Handle("/", s)
		require.NoError(t, c.Start())

		done := make(chan string)
		go func() { done <- serve(c, http.MethodGet, "/wait").Body.String() }()
		synctest.Wait() // suspended

		c.Drain()       // returns although the expired request is still running
		synctest.Wait() // the request's expiry dispatch is blocked on release
		select {
		case <-done:
			t.Fatal("answered before its servlet was let go")
		case <-s.destroy:
			t.Fatal("Destroy ran by Drain")
		default:
		}
		rec := serve(c, http.MethodGet, "/new")
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code, "a new request during the drain")
		assert.Equal(t, "1", rec.Header().Get("Retry-After"))

		shutdown := make(chan error)
		go func() { shutdown <- c.Shutdown(context.Background()) }()
		synctest.Wait()
		select {
		case <-shutdown:
			t.Fatal("Shutdown returned while a request was running")
		default:
		}
		close(s.release)
		assert.Equal(t, "expired", <-done)
		require.NoError(t, <-shutdown)
		<-s.destroy
		assert.NoError(t, c.Shutdown(context.Background()), "again: Destroy runs once")

		fresh := servlet.NewContainer()
		fresh.Drain()
		assert.EqualError(t, fresh.Start(), "servlet: Start after Drain or Shutdown")
	})
}

// An option the Dispatcher refuses panics in NewContainer, not later in
// Start or on the first request.
func TestBadOptionPanicsInNewContainer(t *testing.T) {
	assert.PanicsWithValue(t, "continuation: WithWorkers(0): a pool needs at least one worker",
		func() { servlet.NewContainer(continuation.WithWorkers(0)) })
}
