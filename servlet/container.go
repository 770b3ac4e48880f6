package servlet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cometkit/cometkit/continuation"
)

// Config is what a servlet's Init receives.
type Config struct {
	Pattern    string            // the pattern the servlet is mapped to
	InitParams map[string]string // its init parameters (HandleWith)
}

// InitParam returns the init parameter name, or "".
func (c Config) InitParam(name string) string { return c.InitParams[name] }

// Optional life-cycle methods of a servlet.
type (
	initializer interface{ Init(Config) error }
	destroyer   interface{ Destroy() }
)

// ErrNotStarted is what a Container answers (503) before Start succeeded.
var ErrNotStarted = errors.New("servlet: container not started")

// A Container maps servlets by pattern and serves every request through
// one [continuation.Dispatcher], so every servlet may suspend. Patterns
// follow the Servlet specification:
//
//	/a/b     exact
//	/a/*     path prefix (also matches /a itself)
//	*.ext    extension of the last path segment
//	/        the default servlet
//
// A request goes to the exact match, else the longest path prefix, else the
// extension, else the default; with none it gets 404. The path matched is
// the request's canonical path (see the package documentation), which is
// also what filters and servlets find in r.URL.Path.
type Container struct {
	d *continuation.Dispatcher

	mu        sync.Mutex
	filters   []func(http.Handler) http.Handler
	servlets  []*mapping
	badSetup  []error
	started   bool // Start succeeded: the mappings and filters are fixed
	drained   bool // Drain or Shutdown was called: Start would serve nothing
	destroyed bool // Shutdown ran Destroy

	handler atomic.Pointer[http.Handler] // set by Start; read without the lock on every request
}

type mapping struct {
	pattern string
	servlet any
	handler http.Handler
	params  map[string]string
}

// NewContainer returns a Container whose [continuation.Dispatcher] takes
// opts. It panics on an option the Dispatcher refuses.
func NewContainer(opts ...continuation.Option) *Container {
	return &Container{d: continuation.NewDispatcher(http.NotFoundHandler(), opts...)}
}

// Handle maps pattern to s: an [http.Handler], or a value with Do* methods
// (see [Handler]). A bad or duplicate pattern, or an s that is neither,
// makes Start fail. Handle panics after Start: the mappings are fixed then.
func (c *Container) Handle(pattern string, s any) { c.HandleWith(pattern, s, nil) }

// HandleWith is Handle with init parameters for the servlet's Config.
func (c *Container) HandleWith(pattern string, s any, initParams map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		panic(fmt.Sprintf("servlet: Handle(%q) after Start", pattern))
	}
	h, err := handlerFor(s)
	switch {
	case !validPattern(pattern):
		c.badSetup = append(c.badSetup, fmt.Errorf("servlet: invalid pattern %q", pattern))
	case slices.ContainsFunc(c.servlets, func(m *mapping) bool { return m.pattern == pattern }):
		c.badSetup = append(c.badSetup, fmt.Errorf("servlet: pattern %q mapped twice", pattern))
	case err != nil:
		c.badSetup = append(c.badSetup, fmt.Errorf("servlet: pattern %q: %w", pattern, err))
	default:
		c.servlets = append(c.servlets, &mapping{pattern: pattern, servlet: s, handler: h, params: initParams})
	}
}

// Use adds filters, applied in the order given around the servlets on every
// dispatch (the first and each one after Resume or expiry). A nil filter
// makes Start fail. Use panics after Start: the filters are fixed then.
func (c *Container) Use(filters ...func(http.Handler) http.Handler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		panic("servlet: Use after Start")
	}
	if slices.ContainsFunc(filters, func(f func(http.Handler) http.Handler) bool { return f == nil }) {
		c.badSetup = append(c.badSetup, errors.New("servlet: Use: a nil filter"))
		return
	}
	c.filters = append(c.filters, filters...)
}

// Start checks the mappings and runs each servlet's optional
// Init(Config) error, in the order they were mapped. The first error stops
// Start and is returned, naming the pattern; the servlets already
// initialized are destroyed again. Start fails after Drain or Shutdown.
func (c *Container) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.started:
		return errors.New("servlet: container already started")
	case c.drained:
		return errors.New("servlet: Start after Drain or Shutdown")
	}
	if err := errors.Join(c.badSetup...); err != nil {
		return err
	}
	for i, m := range c.servlets {
		in, ok := m.servlet.(initializer)
		if !ok {
			continue
		}
		if err := in.Init(Config{Pattern: m.pattern, InitParams: m.params}); err != nil {
			destroy(c.servlets[:i])
			return fmt.Errorf("servlet: init %q: %w", m.pattern, err)
		}
	}
	var h http.Handler = newRouter(c.servlets)
	for _, f := range slices.Backward(c.filters) {
		h = f(h)
	}
	h = c.d.Handler(h)
	c.handler.Store(&h)
	c.started = true
	return nil
}

// ServeHTTP serves r through the Dispatcher, by its canonical path. Before
// Start it answers 503 with Retry-After; a path the canonical form refuses
// gets 400.
func (c *Container) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := c.handler.Load()
	if h == nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, ErrNotStarted.Error(), http.StatusServiceUnavailable)
		return
	}
	path, err := canonicalPath(r.URL)
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if path != r.URL.Path || r.URL.RawPath != "" {
		r = withPath(r, path)
	}
	(*h).ServeHTTP(w, r)
}

// Drain begins a graceful shutdown and returns at once: new requests get
// 503 with Retry-After and every suspended request is expired, so its
// servlet answers now (see [continuation.Dispatcher.Drain]). It is what
// [http.Server.RegisterOnShutdown] wants. Drain does not run Destroy;
// Shutdown does, once every request has finished:
//
//	srv.RegisterOnShutdown(c.Drain)
//	err := srv.Shutdown(ctx)               // the requests net/http still serves
//	err = errors.Join(err, c.Shutdown(ctx)) // and those detached from it; then each servlet's Destroy
func (c *Container) Drain() {
	c.mu.Lock()
	c.drained = true
	c.mu.Unlock()
	c.d.Drain()
}

// Shutdown is Drain, then a wait until every request has finished; then it
// runs each servlet's optional Destroy, in reverse order, and returns nil.
// If ctx ends first, Shutdown returns its error and Destroy is not run; a
// later Shutdown may still run it. Destroy runs once at most.
func (c *Container) Shutdown(ctx context.Context) error {
	c.Drain()
	if err := c.d.Shutdown(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started && !c.destroyed {
		c.destroyed = true
		destroy(c.servlets)
	}
	return nil
}

func destroy(ms []*mapping) {
	for _, m := range slices.Backward(ms) {
		if d, ok := m.servlet.(destroyer); ok {
			d.Destroy()
		}
	}
}

func validPattern(p string) bool {
	switch {
	case p == "/":
		return true
	case strings.HasPrefix(p, "*."):
		return len(p) > 2 && !strings.ContainsAny(p[2:], "/*")
	case strings.HasPrefix(p, "/"):
		body := strings.TrimSuffix(p, "/*")
		return !strings.Contains(body, "*")
	}
	return false
}

// router finds a request's servlet by the Servlet specification's rules.
type router struct {
	exact     map[string]http.Handler
	prefixes  []prefixRoute // longest first
	extension map[string]http.Handler
	fallback  http.Handler
}

type prefixRoute struct {
	prefix  string // without the trailing "/*"
	handler http.Handler
}

func newRouter(ms []*mapping) *router {
	rt := &router{exact: map[string]http.Handler{}, extension: map[string]http.Handler{}}
	for _, m := range ms {
		switch p := m.pattern; {
		case p == "/":
			rt.fallback = m.handler
		case strings.HasPrefix(p, "*."):
			rt.extension[p[2:]] = m.handler
		case strings.HasSuffix(p, "/*"):
			rt.prefixes = append(rt.prefixes, prefixRoute{strings.TrimSuffix(p, "/*"), m.handler})
		default:
			rt.exact[p] = m.handler
		}
	}
	slices.SortFunc(rt.prefixes, func(a, b prefixRoute) int { return len(b.prefix) - len(a.prefix) })
	return rt
}

func (rt *router) match(path string) http.Handler {
	if h := rt.exact[path]; h != nil {
		return h
	}
	for _, p := range rt.prefixes {
		if path == p.prefix || strings.HasPrefix(path, p.prefix+"/") {
			return p.handler
		}
	}
	last := path[strings.LastIndexByte(path, '/')+1:]
	if i := strings.LastIndexByte(last, '.'); i >= 0 {
		if h := rt.extension[last[i+1:]]; h != nil {
			return h
		}
	}
	return rt.fallback
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := rt.match(r.URL.Path); h != nil {
		h.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}
