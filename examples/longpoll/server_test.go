package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestDispatcher(s *server, timeout time.Duration) *continuation.Dispatcher {
	return continuation.NewDispatcher(s.routes(), continuation.WithDefaultTimeout(timeout))
}

// serve runs one request in the background; the result arrives on the channel.
func serve(h http.Handler, req *http.Request) <-chan *httptest.ResponseRecorder {
	out := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		out <- rec
	}()
	return out
}

func publishForm(msg string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader(url.Values{"message": {msg}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func TestPublishWakesEverySubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer()
		d := newTestDispatcher(s, time.Minute)
		var subs []<-chan *httptest.ResponseRecorder
		for range 3 {
			subs = append(subs, serve(d, httptest.NewRequest(http.MethodGet, "/subscribe", nil)))
		}
		synctest.Wait()
		require.Equal(t, 3, s.subscribers())

		pub := <-serve(d, publishForm("hello <world>"))
		assert.Equal(t, http.StatusOK, pub.Code)
		assert.Equal(t, "ok", pub.Body.String())
		for _, sub := range subs {
			rec := <-sub
			assert.Equal(t, http.StatusOK, rec.Code)
			assert.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
			assert.Equal(t, "hello <world>", rec.Body.String())
		}
		assert.Zero(t, s.subscribers())

		// GET /publish?message= works too.
		sub := serve(d, httptest.NewRequest(http.MethodGet, "/subscribe", nil))
		synctest.Wait()
		pub = <-serve(d, httptest.NewRequest(http.MethodGet, "/publish?message=again", nil))
		assert.Equal(t, "ok", pub.Body.String())
		assert.Equal(t, "again", (<-sub).Body.String())
	})
}

// A subscriber that waits past the timeout gets 204 and is forgotten, so
// idle polling does not grow the list.
func TestSubscriberTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer()
		d := newTestDispatcher(s, 25*time.Second)
		start := time.Now()
		rec := <-serve(d, httptest.NewRequest(http.MethodGet, "/subscribe", nil))
		assert.Equal(t, http.StatusNoContent, rec.Code)
		assert.Equal(t, 25*time.Second, time.Since(start))
		assert.Zero(t, s.subscribers())
	})
}

// A subscriber that goes away is forgotten.
func TestSubscriberLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer()
		d := newTestDispatcher(s, time.Minute)
		ctx, cancel := context.WithCancel(t.Context())
		done := serve(d, httptest.NewRequestWithContext(ctx, http.MethodGet, "/subscribe", nil))
		synctest.Wait()
		require.Equal(t, 1, s.subscribers())
		cancel()
		<-done
		assert.Zero(t, s.subscribers())
	})
}

func TestBadInput(t *testing.T) {
	big := strings.Repeat("x", maxMessage+1)
	tests := []struct {
		name   string
		req    *http.Request
		code   int
		reason string
	}{
		{"empty message", publishForm(""), http.StatusBadRequest, "message is empty\n"},
		{"no message field", httptest.NewRequest(http.MethodGet, "/publish", nil), http.StatusBadRequest, "message is empty\n"},
		{"oversized body", publishForm(big), http.StatusRequestEntityTooLarge, "message too large\n"},
		{"oversized query", httptest.NewRequest(http.MethodGet, "/publish?message="+big, nil), http.StatusRequestEntityTooLarge, "message too large\n"},
		{"invalid UTF-8", publishForm("\xff\xfe"), http.StatusBadRequest, "message is not valid UTF-8\n"},
		{"bad form encoding", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader("message=%zz"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}(), http.StatusBadRequest, ""},
		{"method not allowed", httptest.NewRequest(http.MethodDelete, "/subscribe", nil), http.StatusMethodNotAllowed, ""},
		{"unknown path", httptest.NewRequest(http.MethodGet, "/nope", nil), http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDispatcher(newServer(), time.Minute)
			rec := httptest.NewRecorder()
			d.ServeHTTP(rec, tt.req)
			assert.Equal(t, tt.code, rec.Code)
			assert.Contains(t, rec.Header().Get("Content-Type"), "text/plain")
			if tt.reason != "" {
				assert.Equal(t, tt.reason, rec.Body.String())
			}
			if tt.code == http.StatusMethodNotAllowed {
				assert.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))
			}
		})
	}
}

// Shutdown answers every waiting subscriber at once.
func TestShutdownAnswersSubscribers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer()
		d := newTestDispatcher(s, time.Hour)
		sub := serve(d, httptest.NewRequest(http.MethodGet, "/subscribe", nil))
		synctest.Wait()
		require.NoError(t, d.Shutdown(t.Context()))
		assert.Equal(t, http.StatusNoContent, (<-sub).Code)
		late := <-serve(d, httptest.NewRequest(http.MethodGet, "/subscribe", nil))
		assert.Equal(t, http.StatusServiceUnavailable, late.Code)
		assert.NotEmpty(t, late.Header().Get("Retry-After"))
	})
}

// Over a real socket, as curl would see it.
func TestOverLoopback(t *testing.T) {
	s := newServer()
	d := newTestDispatcher(s, time.Minute)
	ts := httptest.NewServer(d)
	defer ts.Close()
	defer d.Shutdown(context.Background())

	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(ts.URL + "/subscribe")
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	for s.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	resp, err := http.PostForm(ts.URL+"/publish", url.Values{"message": {"hello"}})
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "hello", <-got)
	ts.Client().CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
}
