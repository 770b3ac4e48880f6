package middleware

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
)

// Check walks r's routes and reports each middleware placed after
// Continuations that swallows a panic, as chi's Recoverer does: a panic
// that follows Suspend would leave the request waiting with a 500 already
// written, where the Dispatcher, which recovers panics itself, would have
// answered 500 and ended the request. Put such middleware before
// Continuations. Call Check once at start-up:
//
//	if err := middleware.Check(r); err != nil {
//		log.Fatal(err)
//	}
//
// Check finds Continuations (and [Middleware.Handler]) by the handler it
// returns, and finds what swallows panics by trying: it wraps, with each
// middleware after Continuations, a handler that panics, and serves one
// request to it ("GET /" with no body, outside the Dispatcher); a
// middleware that returns normally although the handler ran swallowed the
// panic. A middleware that answers that request without calling the
// handler (an authentication check, say) is not checked. chi's Recoverer
// reports the panic to the request's log entry, here one that discards it.
//
// Check does not look for chi's Throttle: nothing a probe can do tells a
// throttle from other middleware reliably. Do not use it on either side of
// Continuations (see the package documentation).
func Check(r chi.Routes) error {
	var errs []error
	err := chi.Walk(r, func(method, route string, _ http.Handler, mws ...func(http.Handler) http.Handler) error {
		cont := slices.IndexFunc(mws, isContinuations)
		if cont < 0 {
			return nil
		}
		for i, mw := range mws[cont+1:] {
			switch {
			case isContinuations(mw):
				errs = append(errs, fmt.Errorf("middleware: %s %s: Continuations twice", method, route))
			case swallowsPanic(mw):
				errs = append(errs, fmt.Errorf("middleware: %s %s: middleware %d after Continuations (%s) swallows panics; put it before",
					method, route, i+1, funcName(mw)))
			}
		}
		return nil
	})
	// chi.Walk visits a route's methods in map order.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(append(errs, err)...)
}

// isContinuations reports whether mw is this package's middleware.
func isContinuations(mw func(http.Handler) http.Handler) bool {
	_, ok := mw(http.NotFoundHandler()).(dispatched)
	return ok
}

// probePanic is the value the probe handler panics with.
type probePanic struct{}

// swallowsPanic reports whether mw, wrapped around a handler that panics,
// returns normally.
func swallowsPanic(mw func(http.Handler) http.Handler) (swallowed bool) {
	ran := false
	h := mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		ran = true
		panic(probePanic{})
	}))
	r, _ := http.NewRequest(http.MethodGet, "/", http.NoBody)
	r = chimw.WithLogEntry(r, discardLogEntry{})
	defer func() {
		if recover() != nil {
			swallowed = false // the panic, or another, came through
		}
	}()
	h.ServeHTTP(discardResponse{http.Header{}}, r)
	return ran
}

// funcName names mw's function, for the message only.
func funcName(mw func(http.Handler) http.Handler) string {
	if f := runtime.FuncForPC(reflect.ValueOf(mw).Pointer()); f != nil {
		return f.Name()
	}
	return "?"
}

type discardLogEntry struct{}

func (discardLogEntry) Write(int, int, http.Header, time.Duration, any) {}
func (discardLogEntry) Panic(any, []byte)                               {}

type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header         { return d.header }
func (d discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d discardResponse) WriteHeader(int)             {}
