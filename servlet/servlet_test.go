package servlet_test

import (
	"context"
	"errors"
	"io"
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
	c.Use(filter("late"))
	c.Handle("/late", named("late"))
	assert.Empty(t, serve(c, http.MethodGet, "/late").Body.String(), "a mapping added after Start is ignored")
}
