package middleware_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/middleware"
)

// requestsTotal is the exposition header of the request counter.
const requestsTotal = `
# HELP cometkit_http_requests_total HTTP requests answered, by route pattern, method and status code.
# TYPE cometkit_http_requests_total counter
`

// Requests are labelled by route pattern, counted once with their final
// status, and /metrics serves the Dispatcher's metrics from the caller's
// registry along with the request metrics.
func TestRequestMetricsAndEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		r := chi.NewRouter()
		r.Use(middleware.RequestMetrics(reg))
		r.Use(middleware.Continuations(continuation.WithMetrics(reg)))
		r.Get("/users/{id}", resumedLater)
		r.Get("/teapot", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
		r.Handle("/metrics", middleware.MetricsHandler(reg))

		for _, path := range []string{"/users/1", "/users/2", "/teapot", "/no/such/path"} {
			r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
		}
		assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(requestsTotal+`cometkit_http_requests_total{code="200",method="GET",route="/users/{id}"} 2
cometkit_http_requests_total{code="404",method="GET",route="unmatched"} 1
cometkit_http_requests_total{code="418",method="GET",route="/teapot"} 1
`), "cometkit_http_requests_total"))

		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		body, _ := io.ReadAll(rec.Body)
		for _, name := range []string{"cometkit_dispatches_total", "cometkit_continuations_suspended",
			"cometkit_http_request_duration_seconds"} {
			assert.Contains(t, string(body), name)
		}
		problems, err := testutil.GatherAndLint(reg)
		require.NoError(t, err)
		assert.Empty(t, problems)
	})
}

// Clients choose the method and, through a handler that passes it on, the
// status code; neither makes new series. Over a real connection: 1,000
// made-up methods, a method in the wrong case, and every status code from
// 600 to 999 (net/http sends any three digits) make three series in all.
func TestRequestMetricsLabelsAreBounded(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := chi.NewRouter()
	r.Use(middleware.RequestMetrics(reg))
	r.Get("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(chi.URLParam(r, "code"))
		w.WriteHeader(code)
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	send := func(method, path string) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for i := range 1000 {
		send(fmt.Sprintf("MADEUP%d", i), "/status/200")
	}
	send("get", "/status/200")
	for code := 600; code <= 999; code++ {
		send(http.MethodGet, fmt.Sprintf("/status/%d", code))
	}
	send(http.MethodGet, "/status/204")

	assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(requestsTotal+`cometkit_http_requests_total{code="204",method="GET",route="/status/{code}"} 1
cometkit_http_requests_total{code="405",method="other",route="unmatched"} 1001
cometkit_http_requests_total{code="other",method="GET",route="/status/{code}"} 400
`), "cometkit_http_requests_total"))
	assert.Equal(t, 2, testutil.CollectAndCount(reg, "cometkit_http_request_duration_seconds"), "by route and method")
}

func TestMetricsSetupPanics(t *testing.T) {
	assert.PanicsWithValue(t, "middleware: RequestMetrics(nil): metrics need a registerer",
		func() { middleware.RequestMetrics(nil) })
	assert.PanicsWithValue(t, "middleware: MetricsHandler(nil): a handler needs a gatherer",
		func() { middleware.MetricsHandler(nil) })
}

// After Continuations, a request counts once, when it finishes, with the
// status it was answered with, whichever dispatch wrote it, and its time
// runs from its first dispatch to its end, the wait included.
func TestRequestMetricsAfterContinuations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		r := chi.NewRouter()
		r.Use(middleware.Continuations(), middleware.RequestMetrics(reg))
		r.Get("/users/{id}", resumedLater)
		r.Get("/stream", func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			n, _ := c.Attribute("n").(int)
			if n == 0 {
				w.WriteHeader(http.StatusAccepted) // in the first dispatch of three
			}
			io.WriteString(w, strconv.Itoa(n))
			if n < 2 {
				c.SetAttribute("n", n+1)
				c.Suspend()
				time.AfterFunc(time.Second, func() { c.Resume() })
			}
		})
		for _, path := range []string{"/users/1", "/stream", "/no/such/path"} {
			r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
		}
		assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(requestsTotal+`cometkit_http_requests_total{code="200",method="GET",route="/users/{id}"} 1
cometkit_http_requests_total{code="202",method="GET",route="/stream"} 1
cometkit_http_requests_total{code="404",method="GET",route="unmatched"} 1
`), "cometkit_http_requests_total"))
		families, err := reg.Gather()
		require.NoError(t, err)
		var streams int
		for _, f := range families {
			if f.GetName() != "cometkit_http_request_duration_seconds" {
				continue
			}
			for _, m := range f.GetMetric() {
				if m.GetLabel()[1].GetValue() == "/stream" { // labels: method, route
					streams++
					assert.Equal(t, uint64(1), m.GetHistogram().GetSampleCount(), "one observation")
					assert.Equal(t, 2.0, m.GetHistogram().GetSampleSum(), "two waits of a second")
				}
			}
		}
		assert.Equal(t, 1, streams)
	})
}

// Two Finished after Continuations each see every request end once.
func TestFinishedTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ends [2][]int
		record := func(i int) func(http.Handler) http.Handler {
			return middleware.Finished(func(r *http.Request, status int, elapsed time.Duration) {
				ends[i] = append(ends[i], status)
			})
		}
		r := chi.NewRouter()
		r.Use(middleware.Continuations(), record(0), record(1))
		r.Get("/users/{id}", resumedLater)
		r.Get("/teapot", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
		for _, path := range []string{"/users/1", "/teapot"} {
			r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
		}
		synctest.Wait()
		assert.Equal(t, [2][]int{{200, 418}, {200, 418}}, ends)
	})
}
