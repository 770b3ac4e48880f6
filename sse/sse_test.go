package sse_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/sse"
)

// parse reads an event stream with a Reader, so tests see what a browser
// would, and checks that the stream holds no field but those this package
// writes.
func parse(t *testing.T, stream string) (events []sse.Event, retry time.Duration) {
	t.Helper()
	for line := range strings.Lines(stream) {
		field, _, _ := strings.Cut(line, ":")
		switch strings.TrimSuffix(field, "\n") {
		case "", "id", "event", "data", "retry":
		default:
			t.Fatalf("unexpected field %q in %q", field, stream)
		}
	}
	r := sse.NewReader(strings.NewReader(stream))
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return events, r.Retry()
		}
		require.NoError(t, err)
		events = append(events, ev)
	}
}

// Whatever the data holds, a parser reads back exactly one event with
// that data (line breaks normalised to LF), and no field the data did not
// come from: a bare CR cannot inject an id: or a retry:.
func TestDataCannotInjectFields(t *testing.T) {
	for _, data := range []string{
		"hello",
		"two\nlines",
		"windows\r\nlines",
		"evil\rid: 0\rretry: 86400000\revent: other",
		"\n\nleading and trailing\n",
		"",
	} {
		rec := httptest.NewRecorder()
		require.NoError(t, sse.Send(rec, sse.Event{ID: "k2-7", Type: "message", Data: []byte(data)}))
		events, retry := parse(t, rec.Body.String())
		require.Len(t, events, 1, "%q", data)
		assert.Equal(t, "k2-7", events[0].ID)
		assert.Equal(t, "message", events[0].Type)
		assert.Equal(t, strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(data), string(events[0].Data))
		assert.Zero(t, retry)
	}
}

func TestInvalidFieldsRefused(t *testing.T) {
	for _, ev := range []sse.Event{{ID: "1\n2"}, {ID: "1\r"}, {ID: "a\x00"}, {Type: "x\ny"}} {
		rec := httptest.NewRecorder()
		assert.ErrorIs(t, sse.Send(rec, ev), sse.ErrInvalidField)
		assert.Empty(t, rec.Body.String(), "nothing written")
	}
}

func TestStartAndKeepAlive(t *testing.T) {
	rec := httptest.NewRecorder()
	require.NoError(t, sse.Start(rec, 2*time.Second))
	assert.Equal(t, "text/event-stream", rec.Header().Get("Content-Type"))
	assert.Equal(t, "no-cache", rec.Header().Get("Cache-Control"))
	assert.Equal(t, "no", rec.Header().Get("X-Accel-Buffering"))
	assert.True(t, rec.Flushed)
	_, retry := parse(t, rec.Body.String())
	assert.Equal(t, 2*time.Second, retry)

	rec = httptest.NewRecorder()
	require.NoError(t, sse.Send(rec))
	assert.Equal(t, ": keep-alive\n\n", rec.Body.String())
	assert.True(t, rec.Flushed)
}

// Over a real connection, a client that stops reading makes Send fail
// after WriteTimeout rather than block forever; here the deadline is
// shown by a writer whose peer is gone.
func TestSendReportsAGoneClient(t *testing.T) {
	sent := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, sse.Start(w, 0))
		<-r.Context().Done() // the client hung up
		var err error
		for range 100 { // the first writes may still land in buffers
			if err = sse.Send(w, sse.Event{Data: bytes.Repeat([]byte("x"), 64<<10)}); err != nil {
				break
			}
		}
		sent <- err
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Error(t, <-sent)
}

func TestLastEventID(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	assert.Empty(t, sse.LastEventID(r))
	r.Header.Set("Last-Event-ID", "k2-7")
	assert.Equal(t, "k2-7", sse.LastEventID(r))
}
