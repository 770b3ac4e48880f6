package continuation_test

// Panics in dispatches and listeners (scenarios 27–29): contained, answered,
// and the pool keeps its workers.

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
)

// Scenario 27: a panic after Suspend answers 500 at once; OnComplete runs
// once, OnTimeout never, no redispatch; the pending Resume gets
// ErrCompleted. The single worker survives for the next request.
func TestPanicAfterSuspend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		var calls atomic.Int32
		resumeErr := make(chan error, 1)
		var logs bytes.Buffer
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			if r.URL.Path == "/ok" {
				io.WriteString(w, "ok")
				return
			}
			c := continuation.FromRequest(r)
			c.SetTimeout(10 * time.Second)
			c.AddListener(recordingListener(&hist))
			require.NoError(t, c.Suspend())
			time.AfterFunc(500*time.Millisecond, func() { resumeErr <- c.Resume() })
			panic("boom")
		}), continuation.WithWorkers(1), continuation.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		start := time.Now()
		cl := get(d, "/")
		rec := cl.Wait()
		assert.Equal(t, http.StatusInternalServerError, rec.Code)
		assert.Zero(t, time.Since(start))
		assert.ErrorIs(t, <-resumeErr, continuation.ErrCompleted)
		assert.Equal(t, []string{"onComplete"}, hist.get())
		assert.Equal(t, int32(1), calls.Load())
		assert.Contains(t, logs.String(), "boom")
		assert.Zero(t, d.Suspended())
		assert.Equal(t, "ok", get(d, "/ok").Wait().Body.String(), "the worker survived")
	})
}

// Scenario 28: what a panic leaves behind depends on what was written and
// whether Complete was called.
func TestPanicAfterCompleteOrResume(t *testing.T) {
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, c *continuation.Continuation)
		code    int
		body    string
		aborted bool
	}{
		{"a write, flush, complete, panic: the response stands", func(w http.ResponseWriter, c *continuation.Continuation) {
			require.NoError(t, c.Suspend())
			io.WriteString(w, "completeBeforeThrow")
			http.NewResponseController(w).Flush()
			require.NoError(t, c.Complete())
			panic("boom")
		}, http.StatusOK, "completeBeforeThrow", false},
		// Jetty discards the unflushed buffer and answers 500; net/http has no
		// way to discard written bytes, so a completed response stands.
		{"b write, complete, panic: the response stands", func(w http.ResponseWriter, c *continuation.Continuation) {
			require.NoError(t, c.Suspend())
			io.WriteString(w, "completeBeforeThrow")
			require.NoError(t, c.Complete())
			panic("boom")
		}, http.StatusOK, "completeBeforeThrow", false},
		{"c resume, panic: 500, no redispatch", func(w http.ResponseWriter, c *continuation.Continuation) {
			if !c.IsInitial() {
				io.WriteString(w, "REDISPATCHED")
				return
			}
			require.NoError(t, c.Suspend())
			require.NoError(t, c.Resume())
			panic("boom")
		}, http.StatusInternalServerError, "Internal Server Error\n", false},
		{"partial response without complete: aborted", func(w http.ResponseWriter, c *continuation.Continuation) {
			io.WriteString(w, "half")
			panic("boom")
		}, http.StatusOK, "half", true},
		{"http.ErrAbortHandler: aborted quietly", func(w http.ResponseWriter, c *continuation.Continuation) {
			require.NoError(t, c.Suspend())
			panic(http.ErrAbortHandler)
		}, http.StatusOK, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var completions atomic.Int32
				d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/other" {
						return
					}
					c := continuation.FromRequest(r)
					if c.IsInitial() {
						c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { completions.Add(1) }})
					}
					tt.handler(w, c)
				}), continuation.WithWorkers(1), continuation.WithLogger(discardLogger()))
				cl := get(d, "/")
				rec := cl.Wait()
				assert.Equal(t, tt.aborted, cl.Aborted(), "aborted")
				assert.Equal(t, tt.code, rec.Code)
				assert.Equal(t, tt.body, rec.Body.String())
				assert.Equal(t, int32(1), completions.Load(), "OnComplete calls")
				// The worker was released: another request is served.
				assert.Equal(t, http.StatusOK, get(d, "/other").Wait().Code)
			})
		})
	}
}

// Scenario 29: a panicking OnComplete does not change the response, and the
// Dispatcher keeps serving.
func TestOnCompletePanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { panic("boom") }})
			require.NoError(t, c.Suspend())
			io.WriteString(w, "DATA")
			require.NoError(t, c.Complete())
		}), continuation.WithLogger(discardLogger()))
		rec := get(d, "/").Wait()
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "DATA", rec.Body.String())
		assert.Equal(t, "DATA", get(d, "/").Wait().Body.String())
	})
}
