package middleware

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
)

// Check walks r's routes and reports each one whose middleware stack puts
// one of chi's middleware where it breaks suspended requests (see the
// package documentation): Recoverer after Continuations, which swallows a
// panic that follows Suspend and leaves the request waiting with a 500
// written; and Throttle on either side, which caps waiting clients before
// it and refuses redispatches with 429 after it. Call it once at start-up:
//
//	if err := middleware.Check(r); err != nil {
//		log.Fatal(err)
//	}
//
// It knows chi's middleware by their functions' identity, so a wrapper
// around them goes unnoticed.
func Check(r chi.Routes) error {
	var errs []error
	err := chi.Walk(r, func(method, route string, _ http.Handler, mws ...func(http.Handler) http.Handler) error {
		cont := -1
		for i, mw := range mws {
			if codeOf(mw) == continuationsCode {
				cont = i
				break
			}
		}
		if cont < 0 {
			return nil
		}
		for i, mw := range mws {
			switch code := codeOf(mw); {
			case code == recovererCode && i > cont:
				errs = append(errs, fmt.Errorf("middleware: %s %s: Recoverer after Continuations; put it before", method, route))
			case code == throttleCode:
				errs = append(errs, fmt.Errorf("middleware: %s %s: Throttle with Continuations; use continuation.WithWorkers and WithMaxSuspended", method, route))
			}
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// codeOf identifies a middleware by its function's code: every closure made
// by chi's Throttle shares one, and so does every Middleware.Handler method
// value.
func codeOf(mw func(http.Handler) http.Handler) uintptr { return reflect.ValueOf(mw).Pointer() }

var (
	continuationsCode = codeOf((&Middleware{}).Handler)
	recovererCode     = codeOf(chimw.Recoverer)
	throttleCode      = codeOf(chimw.Throttle(1))
)
