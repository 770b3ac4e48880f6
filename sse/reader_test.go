package sse_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/sse"
)

// readAll reads every event of stream until io.EOF.
func readAll(t *testing.T, r *sse.Reader) []sse.Event {
	t.Helper()
	var events []sse.Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return events
		}
		require.NoError(t, err)
		events = append(events, ev)
	}
}

// The Reader follows the WHATWG rules a browser's EventSource follows,
// whether the stream arrives at once or a byte at a time (a CR at the end
// of one read and its LF at the start of the next are one line end).
func TestReaderParsesAsEventSource(t *testing.T) {
	for _, tt := range []struct {
		name, stream string
		want         []sse.Event
		retry        time.Duration
	}{
		{"fields", "id: 7\nevent: join\ndata: hi\n\n",
			[]sse.Event{{ID: "7", Type: "join", Data: []byte("hi")}}, 0},
		{"data lines join with LF", "data: one\ndata: two\n\n",
			[]sse.Event{{Data: []byte("one\ntwo")}}, 0},
		{"CR LF, CR and LF all end lines", "data: a\r\ndata: b\rdata: c\n\r\n",
			[]sse.Event{{Data: []byte("a\nb\nc")}}, 0},
		{"one leading space goes, not two", "data:  two\ndata:none\n\n",
			[]sse.Event{{Data: []byte(" two\nnone")}}, 0},
		{"a field without a colon has an empty value", "data\ndata\n\n",
			[]sse.Event{{Data: []byte("\n")}}, 0},
		{"comments and unknown fields are ignored", ": connected\nfoo: bar\ndata: x\n: keep-alive\n\n",
			[]sse.Event{{Data: []byte("x")}}, 0},
		{"no data, no event", "id: 1\nevent: ping\n\ndata: x\n\n",
			[]sse.Event{{Data: []byte("x")}}, 0},
		{"an empty data line is an event", "data:\n\n",
			[]sse.Event{{}}, 0},
		{"an id with a NUL is ignored", "id: 1\x002\ndata: x\n\n",
			[]sse.Event{{Data: []byte("x")}}, 0},
		{"an event the stream cut short is dropped", "data: x\n\ndata: cut",
			[]sse.Event{{Data: []byte("x")}}, 0},
		{"retry in milliseconds", "retry: 1500\n\n", nil, 1500 * time.Millisecond},
		{"a retry that is not digits is ignored", "retry: 1500\n\nretry: -1\nretry: 2s\n\n", nil, 1500 * time.Millisecond},
	} {
		for _, how := range []struct {
			name string
			r    func(string) io.Reader
		}{
			{"at once", func(s string) io.Reader { return strings.NewReader(s) }},
			{"a byte at a time", func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
		} {
			t.Run(tt.name+", "+how.name, func(t *testing.T) {
				r := sse.NewReader(how.r(tt.stream))
				assert.Equal(t, tt.want, readAll(t, r))
				assert.Equal(t, tt.retry, r.Retry())
			})
		}
	}
}

// A server that sends more than MaxEventSize without ending an event, in
// one line or in many, gets ErrEventTooLarge, not a Reader that grows.
func TestReaderBoundsAnEvent(t *testing.T) {
	for name, stream := range map[string]string{
		"one line":   "data: " + strings.Repeat("x", sse.MaxEventSize) + "\n\n",
		"many lines": strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", sse.MaxEventSize/1000) + "\n",
		"comments":   strings.Repeat(": "+strings.Repeat("x", 1000)+"\n", sse.MaxEventSize/1000) + "data: x\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := sse.NewReader(strings.NewReader(stream)).Next()
			assert.ErrorIs(t, err, sse.ErrEventTooLarge)
		})
	}
	// Just under the bound is read.
	stream := "data: " + strings.Repeat("x", sse.MaxEventSize-len("data: \n")-1) + "\n\n"
	ev, err := sse.NewReader(strings.NewReader(stream)).Next()
	require.NoError(t, err)
	assert.Len(t, ev.Data, sse.MaxEventSize-len("data: \n")-1)
}

// A stream's own error (a connection reset) is returned as it is.
func TestReaderReturnsTheStreamsError(t *testing.T) {
	broken := errors.New("connection reset")
	r := sse.NewReader(io.MultiReader(strings.NewReader("data: x\n\n"), iotest.ErrReader(broken)))
	ev, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, "x", string(ev.Data))
	_, err = r.Next()
	assert.ErrorIs(t, err, broken)
}
