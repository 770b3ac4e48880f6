package middleware

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cometkit/cometkit/internal/promreg"
)

// MetricsHandler serves the metrics of g (the registry given to
// continuation.WithMetrics, clientmgr.WithMetrics and RequestMetrics) in
// the Prometheus exposition format, for a /metrics route.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// unmatched labels requests that matched no route: a raw path would let
// clients create label values without bound.
const unmatched = "unmatched"

// RequestMetrics returns chi middleware that counts requests and times
// them, labelled by chi's route pattern ("/rooms/{room}"), never by the raw
// path, on reg:
//
//	cometkit_http_requests_total{route, method, code}
//	cometkit_http_request_duration_seconds{route, method}
//
// Put it before Continuations, so that a request counts once, with its
// final status, and its duration includes the time it waited.
func RequestMetrics(reg prometheus.Registerer) func(http.Handler) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cometkit_http_requests_total",
		Help: "HTTP requests answered, by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cometkit_http_request_duration_seconds",
		Help: "Time from a request's arrival to its answer, waits included, by route pattern and method.",
		// Long-polls wait up to minutes; the default buckets stop at 10 s.
		Buckets: prometheus.ExponentialBucketsRange(0.001, 600, 16),
	}, []string{"route", "method"})
	if reg != nil {
		requests = promreg.Register(reg, requests)
		duration = promreg.Register(reg, duration)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := chimw.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			route := unmatched
			if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RoutePattern() != "" {
				route = rctx.RoutePattern()
			}
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK // nothing written: net/http answers 200
			}
			requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			duration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		})
	}
}
