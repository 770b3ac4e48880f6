package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/servlet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestServer(t *testing.T, timeout time.Duration, opts ...clientmgr.Option) (*servlet.Container, *clientmgr.Manager) {
	t.Helper()
	mgr := clientmgr.New(opts...)
	c, err := newContainer(mgr, continuation.WithDefaultTimeout(timeout))
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Shutdown(context.Background())
		mgr.Close()
	})
	return c, mgr
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

func get(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }

func publishForm(msg string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader(url.Values{"message": {msg}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func decode(t *testing.T, rec *httptest.ResponseRecorder) []jsonMessage {
	t.Helper()
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var msgs []jsonMessage
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &msgs))
	return msgs
}

func TestClassicSubscribe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, mgr := newTestServer(t, time.Minute)
		var subs []<-chan *httptest.ResponseRecorder
		for range 3 {
			subs = append(subs, serve(c, get("/subscribe")))
		}
		synctest.Wait()
		require.Equal(t, 3, mgr.Count(topic))

		pub := <-serve(c, publishForm("hello <world>"))
		assert.Equal(t, "ok", pub.Body.String())
		for _, sub := range subs {
			rec := <-sub
			assert.Equal(t, http.StatusOK, rec.Code)
			assert.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
			assert.Equal(t, "hello <world>", rec.Body.String())
		}
		// The classic protocol waits for the next message, not an old one.
		sub := serve(c, get("/subscribe"))
		synctest.Wait()
		assert.Equal(t, "ok", (<-serve(c, get("/publish?message=again"))).Body.String())
		assert.Equal(t, "again", (<-sub).Body.String())
	})
}

func TestSinceCursor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newTestServer(t, time.Minute)
		for _, m := range []string{"a", "b", "c"} {
			<-serve(c, publishForm(m))
		}
		// Behind: answered at once from the history.
		assert.Equal(t, []jsonMessage{{2, "b"}, {3, "c"}}, decode(t, <-serve(c, get("/subscribe?since=1"))))
		// Up to date: waits, then gets what comes.
		sub := serve(c, get("/subscribe?since=3"))
		synctest.Wait()
		<-serve(c, publishForm("d"))
		assert.Equal(t, []jsonMessage{{4, "d"}}, decode(t, <-sub))
		// A cursor from before a restart: the whole history.
		assert.Len(t, decode(t, <-serve(c, get("/subscribe?since=99"))), 4)
	})
}

func TestTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, mgr := newTestServer(t, 25*time.Second)
		start := time.Now()
		assert.Equal(t, http.StatusNoContent, (<-serve(c, get("/subscribe"))).Code)
		assert.Equal(t, 25*time.Second, time.Since(start))
		assert.Equal(t, []jsonMessage{}, decode(t, <-serve(c, get("/subscribe?since=0"))))
		assert.Zero(t, mgr.Count(topic), "expired subscribers are forgotten")
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
		{"since=abc", get("/subscribe?since=abc"), http.StatusBadRequest, "bad cursor"},
		{"since=-1", get("/subscribe?since=-1"), http.StatusBadRequest, "bad cursor"},
		{"since empty", get("/subscribe?since="), http.StatusBadRequest, "bad cursor"},
		{"since overflows", get("/subscribe?since=99999999999999999999999"), http.StatusBadRequest, "bad cursor"},
		{"empty message", publishForm(""), http.StatusBadRequest, "message is empty"},
		{"no message field", get("/publish"), http.StatusBadRequest, "message is empty"},
		{"oversized body", publishForm(big), http.StatusRequestEntityTooLarge, "message too large"},
		{"oversized query", get("/publish?message=" + big), http.StatusRequestEntityTooLarge, "message too large"},
		{"invalid UTF-8", publishForm("\xff\xfe"), http.StatusBadRequest, "message is not valid UTF-8"},
		{"bad form encoding", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader("message=%zz"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}(), http.StatusBadRequest, "bad form"},
		{"method not allowed", httptest.NewRequest(http.MethodDelete, "/subscribe", nil), http.StatusMethodNotAllowed, "method not allowed"},
		{"unknown path", get("/nope"), http.StatusNotFound, "404 page not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestServer(t, time.Minute)
			rec := <-serve(c, tt.req)
			assert.Equal(t, tt.code, rec.Code)
			assert.Contains(t, rec.Header().Get("Content-Type"), "text/plain")
			assert.True(t, strings.HasPrefix(rec.Body.String(), tt.reason), "reason %q", rec.Body.String())
			if tt.code == http.StatusMethodNotAllowed {
				assert.Equal(t, "GET, HEAD, OPTIONS", rec.Header().Get("Allow"))
			}
		})
	}
}

func TestShutdownAnswersSubscribers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newTestServer(t, time.Hour)
		classic, cursor := serve(c, get("/subscribe")), serve(c, get("/subscribe?since=0"))
		synctest.Wait()
		require.NoError(t, c.Shutdown(t.Context()))
		assert.Equal(t, http.StatusNoContent, (<-classic).Code)
		assert.Equal(t, "[]\n", (<-cursor).Body.String())
		late := <-serve(c, get("/subscribe"))
		assert.Equal(t, http.StatusServiceUnavailable, late.Code)
		assert.NotEmpty(t, late.Header().Get("Retry-After"))
	})
}

// pollSince makes one long-poll with a cursor over HTTP and decodes its
// answer; any status but 200 is an error.
func pollSince(ctx context.Context, client *http.Client, base string, since uint64) ([]jsonMessage, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/subscribe?since=%d", base, since), nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var msgs []jsonMessage
	return msgs, json.NewDecoder(resp.Body).Decode(&msgs)
}

// The loss test: 50 long-poll clients re-polling with since= over
// loopback while a publisher sends 2,000 messages as fast as it can; every
// client gets every message exactly once, in order.
func TestNoMessageLostOverLoopback(t *testing.T) {
	const clients, messages = 50, 2000
	c, _ := newTestServer(t, time.Minute)
	ts := httptest.NewServer(c)
	defer ts.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: clients + 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	poll := func(since uint64) ([]jsonMessage, error) {
		return pollSince(context.Background(), client, ts.URL, since)
	}

	var wg sync.WaitGroup
	received := make([][]uint64, clients)
	for i := range clients {
		wg.Go(func() {
			var since uint64
			for since < messages {
				msgs, err := poll(since)
				if !assert.NoError(t, err) {
					return
				}
				for _, m := range msgs {
					received[i] = append(received[i], m.Seq)
					since = m.Seq
				}
			}
		})
	}
	for i := range messages {
		resp, err := client.PostForm(ts.URL+"/publish", url.Values{"message": {fmt.Sprint("m", i+1)}})
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	wg.Wait()
	want := make([]uint64, messages)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	for i, got := range received {
		require.Equal(t, want, got, "client %d: every message exactly once, in order", i)
	}
}

// The event stream over a real connection: the backlog after the cursor,
// then each message as it comes, multi-line data as several data: lines,
// keep-alives on timeouts, and a reconnect with Last-Event-ID that picks up
// what was published while away.
func TestEventStream(t *testing.T) {
	c, _ := newTestServer(t, 100*time.Millisecond)
	srv := httptest.NewServer(c)
	defer srv.Close()
	for _, m := range []string{"a", "b", "c"} {
		<-serve(c, publishForm(m))
	}
	open := func(query, lastEventID string) (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/events"+query, nil)
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		return resp, bufio.NewReader(resp.Body)
	}
	// next reads one block (up to a blank line) and returns its lines.
	next := func(r *bufio.Reader) []string {
		var lines []string
		for {
			line, err := r.ReadString('\n')
			require.NoError(t, err)
			if line == "\n" {
				return lines
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	}

	resp, r := open("?since=1", "")
	assert.Equal(t, []string{"retry: 1000"}, next(r))
	assert.Equal(t, []string{"id: 2", "data: b"}, next(r))
	assert.Equal(t, []string{"id: 3", "data: c"}, next(r))
	<-serve(c, publishForm("line one\nline two"))
	assert.Equal(t, []string{"id: 4", "data: line one", "data: line two"}, next(r))
	assert.Equal(t, []string{": keep-alive"}, next(r), "after the timeout, the stream stays open")
	resp.Body.Close()

	<-serve(c, publishForm("while away"))
	resp, r = open("", "4")
	defer resp.Body.Close()
	next(r) // retry
	assert.Equal(t, []string{"id: 5", "data: while away"}, next(r))

	bad, err := srv.Client().Get(srv.URL + "/events?since=x")
	require.NoError(t, err)
	bad.Body.Close()
	assert.Equal(t, http.StatusBadRequest, bad.StatusCode)
}
