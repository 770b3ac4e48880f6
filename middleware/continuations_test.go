package middleware_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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

// sameEveryDispatch asserts that each of threeCycles' three dispatches of
// target reports the route want.
func sameEveryDispatch(t *testing.T, h http.Handler, target, want string) {
	t.Helper()
	assert.Equal(t, strings.Repeat(want+"\n", 3), get(h, target), target)
}

func get(h http.Handler, target string) string { return serve(h, target).Body.String() }

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

		sameEveryDispatch(t, r, "/users/42", "/users/{id} id=42")
		sameEveryDispatch(t, r, "/rooms/lobby/messages/7", "/rooms/{room}/messages/{msg} room=lobby *= msg=7")
		sameEveryDispatch(t, r, "/api/v2/items/x", "/api/{version}/items/{item} version=v2 *= item=x")
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
		sameEveryDispatch(t, r, "/rooms/a/wait/1", "/rooms/{room}/wait/{n} room=a *= n=1")
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

// The route is restored wherever the middleware sits: on a route group,
// inside a mounted router, and inline with With in front of a mounted
// router, where chi's mount handler runs after the middleware and the
// mounted router's routing overwrites, in place, the parameters the mount
// handler reads (a copy of the route context that shared chi's slices
// sent the redispatch of /api/v2/items/x/y to the mounted router's "/").
func TestRouteRestoredAroundMounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw := middleware.New()
		api := chi.NewRouter()
		api.Get("/items/{item}/{part}", threeCycles)
		inner := chi.NewRouter()
		inner.Use(mw.Handler)
		inner.Get("/items/{item}", threeCycles)

		r := chi.NewRouter()
		r.With(mw.Handler).Mount("/api/{version}", api)
		r.Mount("/inner/{version}", inner)
		r.Group(func(r chi.Router) {
			r.Use(mw.Handler)
			r.Get("/group/{id}", threeCycles)
		})

		sameEveryDispatch(t, r, "/api/v2/items/x/y", "/api/{version}/items/{item}/{part} version=v2 *= item=x part=y")
		sameEveryDispatch(t, r, "/inner/v3/items/y", "/inner/{version}/items/{item} version=v3 *= item=y")
		sameEveryDispatch(t, r, "/group/9", "/group/{id} id=9")
	})
}

// One Middleware is one Dispatcher, whatever it wraps: two routes wrapped
// separately with r.With share its pool and its cap on suspended requests.
func TestOneDispatcherPerMiddleware(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw := middleware.New(continuation.WithWorkers(1), continuation.WithQueueSize(0),
			continuation.WithMaxSuspended(1), continuation.WithLogger(quiet))
		release := make(chan struct{})
		r := chi.NewRouter()
		r.With(mw.Handler).Get("/busy", func(w http.ResponseWriter, r *http.Request) { <-release })
		wait := func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsExpired() {
				return
			}
			if err := c.Suspend(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
			}
		}
		r.With(mw.Handler).Get("/wait", wait)
		r.With(mw.Handler).Get("/wait-too", wait)

		// The only worker is busy on /busy: /wait finds no worker and no queue.
		busy := make(chan int)
		go func() { busy <- serve(r, "/busy").Code }()
		synctest.Wait()
		rec := serve(r, "/wait")
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code, "one pool")
		assert.Equal(t, "1", rec.Header().Get("Retry-After"))
		close(release)
		assert.Equal(t, http.StatusOK, <-busy)

		// One request waits on /wait; one on /wait-too may not suspend.
		waiting := make(chan int)
		go func() { waiting <- serve(r, "/wait").Code }()
		synctest.Wait()
		rec = serve(r, "/wait-too")
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code, "one cap on suspended requests")
		assert.Contains(t, rec.Body.String(), continuation.ErrOverloaded.Error())
		require.NoError(t, mw.Shutdown(t.Context()))
		assert.Equal(t, http.StatusOK, <-waiting)
	})
}

// Drain returns while a request is still being answered; Shutdown waits
// for it. Both answer the suspended requests of every route the middleware
// wraps.
func TestDrainThenShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw := middleware.New(continuation.WithDefaultTimeout(0), continuation.WithLogger(quiet))
		release := make(chan struct{})
		wait := func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsExpired() {
				<-release
				io.WriteString(w, "bye")
				return
			}
			require.NoError(t, c.Suspend())
		}
		r := chi.NewRouter()
		r.With(mw.Handler).Get("/a", wait)
		r.With(mw.Handler).Get("/b", wait)
		done := make(chan string, 2)
		go func() { done <- get(r, "/a") }()
		go func() { done <- get(r, "/b") }()
		synctest.Wait()

		mw.Drain() // returns although both are still answering
		synctest.Wait()
		assert.Empty(t, done)
		rec := serve(r, "/a")
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code, "new requests are refused")

		shutdown := make(chan error)
		go func() { shutdown <- mw.Shutdown(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-shutdown:
			t.Fatalf("Shutdown returned (%v) while requests were running", err)
		default:
		}
		close(release)
		assert.Equal(t, []string{"bye", "bye"}, []string{<-done, <-done})
		require.NoError(t, <-shutdown)
	})
}

// Setup mistakes panic when the middleware is made, not on a request.
func TestSetupPanics(t *testing.T) {
	assert.PanicsWithValue(t, "continuation: WithWorkers(0): a pool needs at least one worker",
		func() { middleware.New(continuation.WithWorkers(0)) })
	assert.PanicsWithValue(t, "continuation: WithQueueSize(-1): a queue cannot be shorter than empty",
		func() { middleware.Continuations(continuation.WithQueueSize(-1)) })
	assert.PanicsWithValue(t, "middleware: Middleware.Handler(nil): there is no handler to wrap", func() { middleware.New().Handler(nil) })
}

func serve(h http.Handler, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

var quiet = slog.New(slog.DiscardHandler)
