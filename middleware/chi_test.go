package middleware_test

// chi's own middleware stacked before and after Continuations, around a
// handler that suspends and is resumed. Which order is right for each is
// in the package documentation; these tests hold it to that.

import (
	"bytes"
	"compress/gzip"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/middleware"
)

// resumedLater suspends, is resumed 10 ms later, and answers with the
// request ID chi's RequestID gave each dispatch.
func resumedLater(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if c.IsInitial() {
		c.SetAttribute("first-id", chimw.GetReqID(r.Context()))
		c.Suspend()
		time.AfterFunc(10*time.Millisecond, func() { c.Resume() })
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "done "+c.Attribute("first-id").(string)+" "+chimw.GetReqID(r.Context()))
}

func router(before, after []func(http.Handler) http.Handler, h http.HandlerFunc) http.Handler {
	r := chi.NewRouter()
	r.Use(before...)
	r.Use(middleware.Continuations(continuation.WithLogger(quiet)))
	r.Use(after...)
	r.Get("/", h)
	return r
}

// Safe on either side: the request is answered once, correctly.
func TestChiMiddlewareSafeEitherSide(t *testing.T) {
	for name, mw := range map[string]func(http.Handler) http.Handler{
		"RealIP":  chimw.RealIP,
		"Timeout": chimw.Timeout(time.Second), // per dispatch after; a deadline before expires the wait
	} {
		for _, side := range []string{"before", "after"} {
			t.Run(name+" "+side, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var before, after []func(http.Handler) http.Handler
					if side == "before" {
						before = append(before, mw)
					} else {
						after = append(after, mw)
					}
					rec := httptest.NewRecorder()
					router(before, after, resumedLater).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
					assert.Equal(t, http.StatusOK, rec.Code)
					assert.True(t, strings.HasPrefix(rec.Body.String(), "done"), rec.Body.String())
				})
			})
		}
	}
}

// RequestID belongs before: one ID for every dispatch of the request.
// After, each dispatch gets a new one.
func TestChiRequestID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := httptest.NewRecorder()
		router([]func(http.Handler) http.Handler{chimw.RequestID}, nil, resumedLater).
			ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		f := strings.Fields(rec.Body.String())
		require.Len(t, f, 3)
		assert.Equal(t, f[1], f[2], "before: the same ID in both dispatches")

		rec = httptest.NewRecorder()
		router(nil, []func(http.Handler) http.Handler{chimw.RequestID}, resumedLater).
			ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		f = strings.Fields(rec.Body.String())
		require.Len(t, f, 3)
		assert.NotEqual(t, f[1], f[2], "after: a new ID per dispatch")
	})
}

// Logger belongs before: one line per request, with its final status.
// After, it logs every dispatch, the suspended one as a 200 with no body.
func TestChiLogger(t *testing.T) {
	count := func(before, after []func(http.Handler) http.Handler, buf *bytes.Buffer) int {
		var n int
		synctest.Test(t, func(t *testing.T) {
			router(before, after, resumedLater).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
			n = strings.Count(buf.String(), "\n")
		})
		return n
	}
	var b1, b2 bytes.Buffer
	logger := func(buf *bytes.Buffer) func(http.Handler) http.Handler {
		return chimw.RequestLogger(&chimw.DefaultLogFormatter{Logger: log.New(buf, "", 0), NoColor: true})
	}
	assert.Equal(t, 1, count([]func(http.Handler) http.Handler{logger(&b1)}, nil, &b1), "before")
	assert.Equal(t, 2, count(nil, []func(http.Handler) http.Handler{logger(&b2)}, &b2), "after")
}

// Compress belongs before: one compressed stream across all dispatches.
func TestChiCompressBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		router([]func(http.Handler) http.Handler{chimw.Compress(5, "text/plain")}, nil, resumedLater).ServeHTTP(rec, req)
		require.Equal(t, "gzip", rec.Header().Get("Content-Encoding"))
		zr, err := gzip.NewReader(rec.Body)
		require.NoError(t, err)
		body, err := io.ReadAll(zr)
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(string(body), "done"), string(body))
	})
}

// Throttle fits on neither side. Before, it holds its token while a
// request waits, so it caps waiting clients: the second long-poll is
// refused. After, it refuses a redispatch that finds it full, dropping an
// event already delivered: of two requests resumed together, one gets 429.
// WithWorkers and WithMaxSuspended do these jobs without either flaw.
func TestChiThrottle(t *testing.T) {
	for _, side := range []string{"before", "after"} {
		t.Run(side, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var before, after []func(http.Handler) http.Handler
				if side == "before" {
					before = append(before, chimw.Throttle(1))
				} else {
					after = append(after, chimw.Throttle(1))
				}
				var mu sync.Mutex
				var waiting []*continuation.Continuation
				h := router(before, after, func(w http.ResponseWriter, r *http.Request) {
					c := continuation.FromRequest(r)
					if c.IsInitial() {
						c.Suspend()
						mu.Lock()
						waiting = append(waiting, c)
						mu.Unlock()
						return
					}
					time.Sleep(time.Millisecond) // some work in the redispatch
					io.WriteString(w, "done")
				})
				codes := make(chan int, 2)
				for range 2 {
					go func() {
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
						codes <- rec.Code
					}()
					synctest.Wait()
				}
				mu.Lock()
				for _, c := range waiting {
					c.Resume()
				}
				mu.Unlock()
				got := []int{<-codes, <-codes}
				assert.ElementsMatch(t, []int{http.StatusOK, http.StatusTooManyRequests}, got)
			})
		})
	}
}

// Timeout before Continuations, shorter than the wait: its deadline
// expires the suspension and the handler answers (not chi's 504).
func TestChiTimeoutBeforeCutsTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := router([]func(http.Handler) http.Handler{chimw.Timeout(100 * time.Millisecond)}, nil,
			func(w http.ResponseWriter, r *http.Request) {
				c := continuation.FromRequest(r)
				if c.IsExpired() {
					io.WriteString(w, "no news")
					return
				}
				c.Suspend() // would wait 30 s
			})
		start := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "no news", rec.Body.String())
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

// Recoverer before Continuations: the Dispatcher itself answers a panic
// that follows Suspend with 500, and the request ends.
func TestChiRecovererBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := router([]func(http.Handler) http.Handler{chimw.Recoverer}, nil, func(w http.ResponseWriter, r *http.Request) {
			continuation.FromRequest(r).Suspend()
			panic("boom")
		})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		assert.Equal(t, http.StatusInternalServerError, rec.Code)
	})
}
