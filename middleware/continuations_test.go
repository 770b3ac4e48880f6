package middleware_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/middleware"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// threeCycles suspends twice (resumed after 10 ms each time) and answers
// what chi says about the route in every dispatch.
func threeCycles(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	rctx := chi.RouteContext(r.Context())
	fmt.Fprintf(w, "%s", rctx.RoutePattern())
	for i, k := range rctx.URLParams.Keys {
		fmt.Fprintf(w, " %s=%s", k, rctx.URLParams.Values[i])
	}
	fmt.Fprintln(w)
	n, _ := c.Attribute("n").(int)
	if n == 2 {
		return
	}
	c.SetAttribute("n", n+1)
	if err := c.Suspend(); err != nil {
		panic(err)
	}
	time.AfterFunc(10*time.Millisecond, func() { c.Resume() })
}

func get(h http.Handler, target string) string {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec.Body.String()
}

// chi.URLParam and the route pattern are the same in every dispatch, in
// the router, in a Route group and in a mounted sub-router.
func TestRouteContextOnEveryRedispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := chi.NewRouter()
		r.Use(middleware.Continuations())
		r.Get("/users/{id}", threeCycles)
		r.Route("/rooms/{room}", func(r chi.Router) {
			r.Get("/messages/{msg}", threeCycles)
		})
		api := chi.NewRouter()
		api.Get("/items/{item}", threeCycles)
		r.Mount("/api/{version}", api)

		want := "/users/{id} id=42\n"
		assert.Equal(t, want+want+want, get(r, "/users/42"))
		want = "/rooms/{room}/messages/{msg} room=lobby *= msg=7\n"
		assert.Equal(t, want+want+want, get(r, "/rooms/lobby/messages/7"))
		want = "/api/{version}/items/{item} version=v2 *= item=x\n"
		assert.Equal(t, want+want+want, get(r, "/api/v2/items/x"))
	})
}

// The same holds when the middleware sits in a sub-router.
func TestMiddlewareInsideSubRouter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := chi.NewRouter()
		r.Route("/rooms/{room}", func(r chi.Router) {
			r.Use(middleware.Continuations())
			r.Get("/wait/{n}", threeCycles)
		})
		want := "/rooms/{room}/wait/{n} room=a *= n=1\n"
		assert.Equal(t, want+want+want, get(r, "/rooms/a/wait/1"))
	})
}

// Why the middleware restores the route: a bare Dispatcher used as chi
// middleware sees chi's route context grow with every redispatch, and a
// redispatch inside a Route group is routed with the group's leftover path
// and gets 404.
func TestBareDispatcherLosesTheRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := chi.NewRouter()
		r.Use(func(next http.Handler) http.Handler { return continuation.NewDispatcher(next) })
		r.Get("/users/{id}", threeCycles)
		r.Route("/rooms/{room}", func(r chi.Router) {
			r.Get("/messages/{msg}", threeCycles)
		})
		assert.Equal(t, "/users/{id} id=42\n/users/{id}/users/{id} id=42 id=42\n/users/{id}/users/{id}/users/{id} id=42 id=42 id=42\n",
			get(r, "/users/42"))
		assert.Equal(t, "/rooms/{room}/messages/{msg} room=a *= msg=1\n404 page not found\n", get(r, "/rooms/a/messages/1"))
	})
}

// Shutdown answers the parked requests of every Dispatcher the middleware
// built.
func TestShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw := middleware.New(continuation.WithDefaultTimeout(0))
		r := chi.NewRouter()
		r.Use(mw.Handler)
		r.Get("/wait", func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsExpired() {
				io.WriteString(w, "bye")
				return
			}
			require.NoError(t, c.Suspend())
		})
		done := make(chan string)
		go func() { done <- get(r, "/wait") }()
		synctest.Wait()
		require.NoError(t, mw.Shutdown(t.Context()))
		assert.Equal(t, "bye", <-done)
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/wait", nil))
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	})
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
