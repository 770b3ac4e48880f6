package middleware_test

import (
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
	"github.com/stretchr/testify/assert"

	"github.com/cometkit/cometkit/middleware"
)

func noop(http.ResponseWriter, *http.Request) {}

// recoverAll is a hand-written Recoverer: Check knows it by what it does.
func recoverAll(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if recover() != nil {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// wrapped wraps chi's Recoverer in a function of its own, as a user's
// middleware package might.
func wrapped(next http.Handler) http.Handler { return chimw.Recoverer(next) }

// refuseAll answers every request without calling the handler.
func refuseAll(http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
}

func TestCheck(t *testing.T) {
	good := chi.NewRouter()
	good.Use(chimw.RequestID, chimw.Recoverer, middleware.Continuations(), chimw.Timeout(0), chimw.RealIP)
	good.Get("/a", noop)
	assert.NoError(t, middleware.Check(good))

	recovererAfter := chi.NewRouter()
	recovererAfter.Use(middleware.Continuations())
	recovererAfter.Route("/rooms", func(r chi.Router) {
		r.Use(chimw.RequestID, chimw.Recoverer)
		r.Get("/{room}", noop)
	})
	assert.EqualError(t, middleware.Check(recovererAfter),
		"middleware: GET /rooms/{room}: middleware 2 after Continuations (github.com/go-chi/chi/v5/middleware.Recoverer) swallows panics; put it before")

	// Known by behaviour, whatever the function: wrapped, hand-written,
	// inline with With after a Middleware's Handler.
	mw := middleware.New()
	behaviour := chi.NewRouter()
	behaviour.Use(mw.Handler, wrapped)
	behaviour.Post("/b", noop)
	behaviour.With(recoverAll).Get("/c", noop)
	behaviour.With(mw.Handler).Put("/d", noop)
	assert.EqualError(t, middleware.Check(behaviour), ""+
		"middleware: GET /c: middleware 1 after Continuations (github.com/cometkit/cometkit/middleware_test.wrapped) swallows panics; put it before\n"+
		"middleware: GET /c: middleware 2 after Continuations (github.com/cometkit/cometkit/middleware_test.recoverAll) swallows panics; put it before\n"+
		"middleware: POST /b: middleware 1 after Continuations (github.com/cometkit/cometkit/middleware_test.wrapped) swallows panics; put it before\n"+
		"middleware: PUT /d: Continuations twice\n"+
		"middleware: PUT /d: middleware 1 after Continuations (github.com/cometkit/cometkit/middleware_test.wrapped) swallows panics; put it before")

	// A middleware that never calls the handler cannot be checked; Check
	// does not look for Throttle (see its documentation).
	unknown := chi.NewRouter()
	unknown.Use(middleware.Continuations(), refuseAll, chimw.Throttle(1))
	unknown.Get("/e", noop)
	assert.NoError(t, middleware.Check(unknown))

	// Without Continuations, chi's middleware are none of our business.
	plain := chi.NewRouter()
	plain.Use(chimw.Throttle(1), chimw.Recoverer)
	plain.Get("/f", noop)
	assert.NoError(t, middleware.Check(plain))
}
