package continuation_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// do serves one request in process, so that tests run inside a
// testing/synctest bubble with a fake clock and no network.
func do(h http.Handler, method, target string, body io.Reader) *continuationtest.Call {
	return continuationtest.Start(h, httptest.NewRequest(method, target, body))
}

func get(h http.Handler, target string) *continuationtest.Call {
	return do(h, http.MethodGet, target, nil)
}

// finished reports, without waiting, whether call has been answered.
func finished(call *continuationtest.Call) bool {
	select {
	case <-call.Done():
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

// recordingListener appends onTimeout/onComplete to a history.
func recordingListener(h *history) continuation.Listener {
	return continuation.ListenerFuncs{
		Timeout:  func(*continuation.Continuation) { h.add("onTimeout") },
		Complete: func(*continuation.Continuation) { h.add("onComplete") },
	}
}

// suspendEach returns a handler that suspends every first dispatch and
// sends its continuation on cs; a redispatch runs again (if not nil).
func suspendEach(t *testing.T, cs chan<- *continuation.Continuation, again func(http.ResponseWriter, *continuation.Continuation)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsInitial() {
			require.NoError(t, c.Suspend())
			cs <- c
			return
		}
		if again != nil {
			again(w, c)
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
