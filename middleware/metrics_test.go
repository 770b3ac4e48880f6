package middleware_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/middleware"
)

// Requests are labelled by route pattern, counted once with their final
// status, and /metrics serves the dispatcher's and clientmgr's metrics from
// the caller's registry.
func TestRequestMetricsAndEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		mgr := clientmgr.New(clientmgr.WithMetrics(reg))
		defer mgr.Close()
		r := chi.NewRouter()
		r.Use(middleware.RequestMetrics(reg))
		r.Use(middleware.Continuations(continuation.WithMetrics(reg)))
		r.Get("/users/{id}", resumedLater)
		r.Get("/teapot", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
		r.Handle("/metrics", middleware.MetricsHandler(reg))

		for _, path := range []string{"/users/1", "/users/2", "/teapot", "/no/such/path"} {
			r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
		}
		assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cometkit_http_requests_total HTTP requests answered, by route pattern, method and status code.
# TYPE cometkit_http_requests_total counter
cometkit_http_requests_total{code="200",method="GET",route="/users/{id}"} 2
cometkit_http_requests_total{code="404",method="GET",route="unmatched"} 1
cometkit_http_requests_total{code="418",method="GET",route="/teapot"} 1
`), "cometkit_http_requests_total"))

		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		body, _ := io.ReadAll(rec.Body)
		for _, name := range []string{"cometkit_dispatches_total", "cometkit_continuations_suspended",
			"cometkit_clientmgr_topics", "cometkit_http_request_duration_seconds"} {
			assert.Contains(t, string(body), name)
		}
		problems, err := testutil.GatherAndLint(reg)
		require.NoError(t, err)
		assert.Empty(t, problems)
	})
}
