package respond_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/internal/respond"
	"github.com/cometkit/cometkit/internal/testproc"
)

// The whole body goes out with its length (so it is not chunked), with
// the headers set before the call.
func TestBoundedWritesWholeAnswer(t *testing.T) {
	errs := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		errs <- respond.Bounded(w, http.StatusCreated, "application/json", []byte(`{"a":1}`), time.Second)
	}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, `{"a":1}`, string(body))
	assert.Equal(t, int64(7), resp.ContentLength)
	assert.Empty(t, resp.TransferEncoding)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	assert.NoError(t, <-errs)
}

// A client that reads nothing makes the write fail with a timeout, within
// the deadline, instead of holding the handler.
func TestBoundedGivesUpOnNonReader(t *testing.T) {
	big := []byte(strings.Repeat("x", 32<<20)) // more than the sockets hold
	errs := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errs <- respond.Bounded(w, http.StatusOK, "text/plain", big, 200*time.Millisecond)
	}))
	defer srv.Close()

	slow, err := testproc.DialNonReader(srv.Listener.Addr().String())
	require.NoError(t, err)
	defer slow.Close()
	_, err = io.WriteString(slow, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	select {
	case err := <-errs:
		assert.True(t, errors.Is(err, os.ErrDeadlineExceeded), "%v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the write to a client that reads nothing did not give up")
	}
}

// The deadline ends with the answer (Bounded relies on net/http to clear
// it): the connection's next request, served by a handler that sets none
// and writes after the first's deadline, is answered.
func TestBoundedLeavesNoDeadline(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bounded" {
			respond.Bounded(w, http.StatusOK, "text/plain", []byte("bounded"), 100*time.Millisecond)
			return
		}
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "late")
	}))
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	for _, path := range []string{"/bounded", "/late"} {
		resp, err := srv.Client().Get(srv.URL + path)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, path[1:], string(b))
	}
	assert.Equal(t, int32(1), conns.Load(), "both requests on one connection")
}
