package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"
)

// MaxEventSize bounds what a [Reader] takes for one event: its lines
// together, data, fields and comments. A server that sends more without a
// blank line is not one to wait for.
const MaxEventSize = 1 << 20

// ErrEventTooLarge is returned by [Reader.Next] for an event larger than
// [MaxEventSize].
var ErrEventTooLarge = errors.New("sse: an event larger than MaxEventSize")

// A Reader reads server-sent events from a stream as a browser's
// EventSource does (the WHATWG event-stream rules): lines end at CR LF, LF
// or CR; a line that starts with a colon is a comment; a field's value
// loses one leading space; data: lines join with LF; an event ends at a
// blank line, and one without data is not an event (an id: alone only
// moves the last event id). Fields it does not know are ignored. It is for
// Go clients of a stream and for tests that must see what a browser sees:
//
//	resp, err := http.Get(url) // with Accept: text/event-stream
//	...
//	events := sse.NewReader(resp.Body)
//	for {
//		ev, err := events.Next()
//		if err != nil {
//			return err // io.EOF: the stream ended
//		}
//		handle(ev)
//	}
type Reader struct {
	lines *bufio.Scanner
	retry time.Duration
}

// NewReader returns a Reader of the stream r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, MaxEventSize)
	sc.Split(scanLines)
	return &Reader{lines: sc}
}

// Next returns the next event. Its ID is the event's own id: field, ""
// when it had none (EventSource would keep the last one); its Type is ""
// when it had no event: field, which a browser takes as "message". Next
// returns io.EOF when the stream ends, even inside an event (a browser
// drops an event the stream cut short), [ErrEventTooLarge], or the
// stream's error.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data []byte
	hasData := false
	size := 0
	for r.lines.Scan() {
		line := r.lines.Bytes()
		if size += len(line) + 1; size > MaxEventSize {
			return Event{}, ErrEventTooLarge
		}
		if len(line) == 0 {
			if hasData {
				ev.Data = data
				return ev, nil
			}
			ev, data, size = Event{}, nil, 0
			continue
		}
		if line[0] == ':' {
			continue // a comment: a keep-alive, or a stream's greeting
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			if bytes.IndexByte(value, 0) < 0 { // as EventSource: an id with a NUL is ignored
				ev.ID = string(value)
			}
		case "event":
			ev.Type = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data, hasData = append(data, value...), true
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 31); err == nil {
				r.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if err := r.lines.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Event{}, ErrEventTooLarge
		}
		return Event{}, err
	}
	return Event{}, io.EOF
}

// Retry returns the reconnection delay the stream asked for in its last
// valid retry: field, or 0 if it has sent none.
func (r *Reader) Retry() time.Duration { return r.retry }

// scanLines splits at CR LF, LF or CR, as the event-stream format does. A
// CR at the end of what has arrived waits for the next byte, which may be
// its LF.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	i := bytes.IndexAny(data, "\r\n")
	switch {
	case i < 0 && atEOF && len(data) > 0:
		return len(data), data, nil
	case i < 0:
		return 0, nil, nil
	case data[i] == '\n':
		return i + 1, data[:i], nil
	case i+1 < len(data) && data[i+1] == '\n':
		return i + 2, data[:i], nil
	case i+1 == len(data) && !atEOF:
		return 0, nil, nil
	}
	return i + 1, data[:i], nil
}
