package continuation_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// call is one request served by calling ServeHTTP directly, so that tests
// run inside a testing/synctest bubble with a fake clock and no network.
type call struct {
	rec     *httptest.ResponseRecorder
	done    chan struct{}
	cancel  context.CancelFunc // simulates the client going away
	start   time.Time
	end     time.Time
	aborted bool // the handler's panic aborted the response (http.ErrAbortHandler)
}

func do(h http.Handler, method, target string, body io.Reader) *call {
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, method, target, body)
	cl := &call{rec: httptest.NewRecorder(), done: make(chan struct{}), cancel: cancel, start: time.Now()}
	go func() {
		defer close(cl.done)
		defer cancel()
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					panic(p)
				}
				cl.aborted = true
			}
			cl.end = time.Now()
		}()
		h.ServeHTTP(cl.rec, req)
	}()
	return cl
}

func get(h http.Handler, target string) *call { return do(h, http.MethodGet, target, nil) }

// wait blocks until the request has been answered. Inside a synctest bubble
// a request that never finishes fails the test as a deadlock, not a hang.
func (cl *call) wait() *httptest.ResponseRecorder {
	<-cl.done
	return cl.rec
}

func (cl *call) elapsed() time.Duration { return cl.end.Sub(cl.start) }

func (cl *call) finished() bool {
	select {
	case <-cl.done:
		return true
	default:
		return false
	}
}

// history is a server-side record of what happened, as in Jetty's tests.
type history struct {
	mu     sync.Mutex
	events []string
}

func (h *history) add(e string) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

func (h *history) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

func (h *history) count(e string) int {
	n := 0
	for _, x := range h.get() {
		if x == e {
			n++
		}
	}
	return n
}

// recordingListener appends onTimeout/onComplete to a history.
func recordingListener(h *history) continuation.Listener {
	return continuation.ListenerFuncs{
		Timeout:  func(*continuation.Continuation) { h.add("onTimeout") },
		Complete: func(*continuation.Continuation) { h.add("onComplete") },
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
