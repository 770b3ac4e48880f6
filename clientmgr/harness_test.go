package clientmgr_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// poll is a request served by calling ServeHTTP directly, so tests run in a
// synctest bubble.
type poll struct {
	rec    *httptest.ResponseRecorder
	done   chan struct{}
	cancel context.CancelFunc
}

func start(h http.Handler, target string) *poll {
	ctx, cancel := context.WithCancel(context.Background())
	p := &poll{rec: httptest.NewRecorder(), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(p.done)
		defer cancel()
		h.ServeHTTP(p.rec, httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil))
	}()
	return p
}

func (p *poll) wait() *httptest.ResponseRecorder {
	<-p.done
	return p.rec
}

// handlerFunc builds a Dispatcher around f.
func dispatcher(f func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation), opts ...continuation.Option) *continuation.Dispatcher {
	return continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f(w, r, continuation.FromRequest(r))
	}), opts...)
}
