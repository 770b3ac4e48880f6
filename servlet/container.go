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
// one continuation.Dispatcher, so every servlet may suspend. Patterns
// follow the Servlet specification:
//
//	/a/b     exact
//	/a/*     path prefix (also matches /a itself)
//	*.ext    extension of the last path segment
//	/        the default servlet
//
// A request goes to the exact match, else the longest path prefix, else the
// extension, else the default; with none it gets 404.
type Container struct {
	opts    []continuation.Option
	filters []func(http.Handler) http.Handler

	mu       sync.Mutex
	servlets []*mapping
	badSetup []error
	started  bool
	d        atomic.Pointer[continuation.Dispatcher] // set by Start; read without the lock on every request
}

type mapping struct {
	pattern string
	servlet any
	handler http.Handler
	params  map[string]string
}

// NewContainer returns a Container whose Dispatcher takes opts.
func NewContainer(opts ...continuation.Option) *Container {
	return &Container{opts: opts}
}

// Handle maps pattern to s: an http.Handler, or a value with Do* methods
// (see Handler). A bad or duplicate pattern makes Start fail.
func (c *Container) Handle(pattern string, s any) { c.HandleWith(pattern, s, nil) }

// HandleWith is Handle with init parameters for the servlet's Config.
func (c *Container) HandleWith(pattern string, s any, initParams map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.started:
		c.badSetup = append(c.badSetup, fmt.Errorf("servlet: Handle(%q) after Start", pattern))
		return
	case !validPattern(pattern):
		c.badSetup = append(c.badSetup, fmt.Errorf("servlet: invalid pattern %q", pattern))
		return
	case slices.ContainsFunc(c.servlets, func(m *mapping) bool { return m.pattern == pattern }):
		c.badSetup = append(c.badSetup, fmt.Errorf("servlet: pattern %q mapped twice", pattern))
		return
	}
	c.servlets = append(c.servlets, &mapping{pattern: pattern, servlet: s, handler: Handler(s), params: initParams})
}

// Use adds filters, applied in the order given around the servlets on every
// dispatch (the first and each one after Resume or expiry). Call it before
// Start.
func (c *Container) Use(filters ...func(http.Handler) http.Handler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		c.badSetup = append(c.badSetup, errors.New("servlet: Use after Start"))
		return
	}
	c.filters = append(c.filters, filters...)
}

// Start checks the mappings and runs each servlet's optional
// Init(Config) error, in the order they were mapped. The first error stops
// Start and is returned, naming the pattern; the servlets already
// initialized are destroyed again.
func (c *Container) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("servlet: container already started")
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
	for i := len(c.filters) - 1; i >= 0; i-- {
		h = c.filters[i](h)
	}
	c.d.Store(continuation.NewDispatcher(h, c.opts...))
	c.started = true
	return nil
}

// ServeHTTP serves r through the Dispatcher; before Start it answers 503.
func (c *Container) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := c.d.Load()
	if d == nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, ErrNotStarted.Error(), http.StatusServiceUnavailable)
		return
	}
	d.ServeHTTP(w, r)
}

// Shutdown shuts the Dispatcher down (new requests get 503, suspended ones
// are expired so their servlets answer) and, once every request has
// finished, runs each servlet's optional Destroy, in reverse order. If ctx
// ends first, Shutdown returns its error and Destroy is not run.
func (c *Container) Shutdown(ctx context.Context) error {
	d := c.d.Load()
	if d == nil {
		return nil
	}
	if err := d.Shutdown(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		c.started = false
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
