package clientmgr_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start serves a GET of target through h in process, so tests run in a
// synctest bubble.
func start(h http.Handler, target string) *continuationtest.Call {
	return continuationtest.Start(h, httptest.NewRequest(http.MethodGet, target, nil))
}

// dispatcher builds a Dispatcher around f.
func dispatcher(f func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation), opts ...continuation.Option) *continuation.Dispatcher {
	return continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f(w, r, continuation.FromRequest(r))
	}), opts...)
}
