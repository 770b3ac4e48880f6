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

func TestCheck(t *testing.T) {
	good := chi.NewRouter()
	good.Use(chimw.RequestID, chimw.Recoverer, middleware.Continuations(), chimw.Timeout(0))
	good.Get("/a", noop)
	assert.NoError(t, middleware.Check(good))

	recovererAfter := chi.NewRouter()
	recovererAfter.Use(middleware.Continuations())
	recovererAfter.Route("/rooms", func(r chi.Router) {
		r.Use(chimw.Recoverer)
		r.Get("/{room}", noop)
	})
	assert.EqualError(t, middleware.Check(recovererAfter),
		"middleware: GET /rooms/{room}: Recoverer after Continuations; put it before")

	throttled := chi.NewRouter()
	throttled.Use(chimw.ThrottleBacklog(10, 100, 0), middleware.New().Handler)
	throttled.Post("/b", noop)
	assert.ErrorContains(t, middleware.Check(throttled), "POST /b: Throttle with Continuations")

	// Without Continuations, chi's middleware are none of our business.
	plain := chi.NewRouter()
	plain.Use(chimw.Throttle(1), chimw.Recoverer)
	plain.Get("/c", noop)
	assert.NoError(t, middleware.Check(plain))
}
