package middleware

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/internal/promreg"
)

// MetricsHandler serves the metrics of g (the registry given to
// [continuation.WithMetrics], clientmgr.WithMetrics and [RequestMetrics])
// in the Prometheus exposition format, for a /metrics route. It panics if
// g is nil.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	check.That(g != nil, "MetricsHandler", g, "a handler needs a gatherer")
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// Label values for what falls outside a label's closed set.
const (
	unmatched = "unmatched" // the route of a request no route matched
	other     = "other"     // a method HTTP does not define, or a status code outside 100–599
)

// RequestMetrics returns chi middleware that counts requests and times
// them on reg:
//
//	cometkit_http_requests_total{route, method, code}
//	cometkit_http_request_duration_seconds{route, method}
//
// Every label comes from a closed set, so that no client can make new
// series (each costs the server memory for good): route is chi's route
// pattern ("/rooms/{room}"), never the raw path, or "unmatched"; method is
// one of the nine methods HTTP defines (GET, HEAD, POST, PUT, PATCH,
// DELETE, CONNECT, OPTIONS, TRACE), or "other"; code is the status code
// if it is 100–599, or "other". That bounds the series to (the routes and
// "unmatched") × 10 methods × 501 codes, whatever clients send or handlers
// write.
//
// Put it after Continuations (r.Use(mw.Handler, RequestMetrics(reg))): it
// then counts a request once, when it finishes, with the status it was
// answered with, and times it from its first dispatch to its end, waits
// included, whichever goroutine answers it (a request that waits detached
// from net/http is answered on another). Before Continuations it counts
// and times what ServeHTTP does, which for a request that waits detached
// ends when it detaches. It panics if reg is nil.
func RequestMetrics(reg prometheus.Registerer) func(http.Handler) http.Handler {
	check.That(reg != nil, "RequestMetrics", reg, "metrics need a registerer")
	requests := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cometkit_http_requests_total",
		Help: "HTTP requests answered, by route pattern, method and status code.",
	}, []string{"route", "method", "code"}))
	duration := promreg.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cometkit_http_request_duration_seconds",
		Help: "Time from a request's arrival to its answer, waits included, by route pattern and method.",
		// Long-polls wait up to minutes; the default buckets stop at 10 s.
		Buckets: prometheus.ExponentialBucketsRange(0.001, 600, 16),
	}, []string{"route", "method"}))
	return Finished(func(r *http.Request, status int, elapsed time.Duration) {
		route := unmatched
		if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RoutePattern() != "" {
			route = rctx.RoutePattern()
		}
		method := methodLabel(r.Method)
		requests.WithLabelValues(route, method, codeLabel(status)).Inc()
		duration.WithLabelValues(route, method).Observe(elapsed.Seconds())
	})
}

// Finished returns middleware that calls f once per request, when the
// request has finished, with the status it was answered with (0 if
// nothing was written: net/http answers 200) and the time it took. Put it
// after Continuations: it then sees a request's end across all its
// dispatches and waits, whichever goroutine answers it (a request that
// waits detached from net/http is answered on another), and times it from
// its first dispatch. Before Continuations, or without them, it sees what
// ServeHTTP does, which for a request that waits detached ends when it
// detaches. RequestMetrics is built on it; so is a request log.
func Finished(f func(r *http.Request, status int, elapsed time.Duration)) func(http.Handler) http.Handler {
	key := new(requestEndKey) // this middleware's own, so that several keep apart
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ww := chimw.NewWrapResponseWriter(w, r.ProtoMajor)
			if c := continuation.FromRequest(r); c != nil {
				st := trackRequest(c, key, f)
				next.ServeHTTP(ww, r)
				st.wrote(ww.Status())
				return
			}
			start := time.Now()
			next.ServeHTTP(ww, r)
			f(r, ww.Status(), time.Since(start))
		})
	}
}

// requestEnd is what Finished keeps of a request served through a
// Dispatcher across its dispatches: when the first began, and the status
// the response was given.
type requestEnd struct {
	start  time.Time
	status atomic.Int64
}

// A requestEndKey, by its address, is the Continuation value under which
// one Finished keeps its requestEnd.
type requestEndKey struct{ _ byte }

// trackRequest returns c's requestEnd under key, made in its first
// dispatch with a listener that calls f when the request finishes.
func trackRequest(c *continuation.Continuation, key *requestEndKey, f func(*http.Request, int, time.Duration)) *requestEnd {
	v, loaded := c.LoadOrStoreValue(key, &requestEnd{start: time.Now()})
	st := v.(*requestEnd)
	if !loaded {
		c.AddListener(continuation.ListenerFuncs{Complete: func(c *continuation.Continuation) {
			f(c.Request(), int(st.status.Load()), time.Since(st.start))
		}})
	}
	return st
}

// wrote records the status a dispatch wrote, the first one written: a
// response has one.
func (st *requestEnd) wrote(status int) {
	if status != 0 {
		st.status.CompareAndSwap(0, int64(status))
	}
}

// methodLabel returns m if HTTP defines it (RFC 9110, section 9), else
// "other". Methods are case-sensitive: "get" is "other".
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return other
}

// codeLabel returns the status code as a label: 200 when nothing was
// written (net/http answers 200), the code if it is 100–599, else "other".
func codeLabel(code int) string {
	switch {
	case code == 0:
		return "200"
	case code < 100 || code > 599:
		return other
	}
	return strconv.Itoa(code)
}
