// Package sse writes server-sent events (the text/event-stream format that
// browsers read with EventSource) on an http.ResponseWriter, safely and
// across the dispatches of a suspended request.
//
// A stream is one response written over many dispatches: the first sets
// the headers and flushes them (Start), each later one writes the events
// that arrived and flushes them (Send), and the request suspends again in
// between. Send with no events writes a keep-alive comment, which keeps
// proxies from cutting an idle stream:
//
//	func stream(w http.ResponseWriter, r *http.Request) {
//		c := continuation.FromRequest(r)
//		if c.IsInitial() {
//			if err := sse.Start(w, 2*time.Second); err != nil {
//				return
//			}
//		} else if err := sse.Send(w, events(c)...); err != nil {
//			return // the client is gone or does not read
//		}
//		// suspend again, and register for what comes next
//	}
//
// Event data may hold any text: it is split into one data: line per line,
// on CR LF, LF and CR alike, so a message cannot inject fields of its own
// (an id: that rewinds the client, a retry: that stops it reconnecting).
// IDs and event types with a line break or a NUL are refused.
//
// A [Reader] reads a stream back as a browser's EventSource does, for Go
// clients of a stream and for tests that must see what a browser sees.
package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// WriteTimeout bounds each Start and Send: a client that stops reading must
// not hold its request, and the connection, forever.
const WriteTimeout = 10 * time.Second

// An Event is one server-sent event.
type Event struct {
	ID   string // the client's Last-Event-ID from here on; "" sends none
	Type string // the event: field, what EventSource listeners are named by; "" is "message"
	Data []byte // any text; each line becomes a data: line
}

// ErrInvalidField is returned for an ID or Type that holds a line break or a
// NUL, which would end the field early and let the rest pass for a field
// of its own.
var ErrInvalidField = errors.New("sse: line break or NUL in an event's id or type")

// Header sets the response headers of an event stream: its content type,
// no caching, and no buffering by nginx (X-Accel-Buffering), which would
// otherwise hold events back.
func Header(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}

// Start begins a stream: the headers, a retry: field telling the client how
// long to wait before it reconnects (none when retry is 0), and a comment,
// flushed so the client knows at once that it is connected.
func Start(w http.ResponseWriter, retry time.Duration) error {
	Header(w.Header())
	var b bytes.Buffer
	if retry > 0 {
		fmt.Fprintf(&b, "retry: %d\n", retry.Milliseconds())
	}
	b.WriteString(": connected\n\n")
	return flush(w, b.Bytes())
}

// Send writes the events and flushes them, or, with none, a keep-alive
// comment. It fails if an event is invalid, or if the client does not take
// them within WriteTimeout.
func Send(w http.ResponseWriter, events ...Event) error {
	var b bytes.Buffer
	if len(events) == 0 {
		b.WriteString(": keep-alive\n\n")
	}
	for _, ev := range events {
		if _, err := ev.WriteTo(&b); err != nil {
			return err
		}
	}
	return flush(w, b.Bytes())
}

// WriteTo writes the event in the event-stream format.
func (ev Event) WriteTo(w io.Writer) (int64, error) {
	if strings.ContainsAny(ev.ID, "\r\n\x00") || strings.ContainsAny(ev.Type, "\r\n\x00") {
		return 0, ErrInvalidField
	}
	var b bytes.Buffer
	if ev.ID != "" {
		b.WriteString("id: " + ev.ID + "\n")
	}
	if ev.Type != "" {
		b.WriteString("event: " + ev.Type + "\n")
	}
	for _, line := range lines(ev.Data) {
		b.WriteString("data: ")
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.WriteTo(w)
}

// lines splits data at CR LF, LF and CR, as an event-stream parser does.
func lines(data []byte) [][]byte {
	var out [][]byte
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			return append(out, data)
		}
		out = append(out, data[:i])
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// LastEventID returns the id of the last event a reconnecting EventSource
// saw (its Last-Event-ID header), or "". A client's first request has none:
// pass the cursor in the query then.
func LastEventID(r *http.Request) string { return r.Header.Get("Last-Event-ID") }

// flush writes p and flushes it within WriteTimeout.
func flush(w http.ResponseWriter, p []byte) error {
	rc := http.NewResponseController(w)
	// Not every writer has deadlines (a recorder in tests): then none.
	if err := rc.SetWriteDeadline(time.Now().Add(WriteTimeout)); err == nil {
		defer rc.SetWriteDeadline(time.Time{})
	}
	if _, err := w.Write(p); err != nil {
		return err
	}
	return rc.Flush()
}
