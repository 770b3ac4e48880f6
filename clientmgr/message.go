package clientmgr

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// A Message is one broadcast on a topic.
type Message struct {
	Topic string
	// Epoch names the topic's sequence: it changes whenever the sequence
	// starts again at 1 (the process restarted, the topic was reclaimed,
	// the broker's engine lost its data), so that a Seq is never taken for
	// the Seq of another sequence.
	Epoch uint64
	Seq   uint64 // per topic and epoch, starting at 1, strictly increasing, no gaps
	Data  []byte
	Time  time.Time
}

// Cursor returns the message's position, the cursor a client that has
// seen it registers with.
func (m Message) Cursor() Cursor { return Cursor{Epoch: m.Epoch, Seq: m.Seq} }

// jsonMessage is a Message as a browser reads it: names in lower case, the
// epoch as text (JavaScript numbers cannot hold 64 bits), and the data as
// a string when it is UTF-8 text, else in base64 with
// "encoding":"base64".
type jsonMessage struct {
	Topic    string    `json:"topic"`
	Epoch    string    `json:"epoch"`
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Data     string    `json:"data"`
	Encoding string    `json:"encoding,omitempty"`
}

// MarshalJSON encodes m as
//
//	{"topic":"room:lobby","epoch":"mbk2z3q1xc","seq":42,"time":"2026-12-01T10:00:00Z","data":"hello"}
//
// The data is a JSON string when it is valid UTF-8 (a JSON document
// published as data arrives as its text, for JSON.parse), and otherwise
// base64, marked with "encoding":"base64". The epoch is in the form
// Cursor.String uses. <, > and & are escaped as json.Marshal escapes them
// (for JSON inside HTML) only when the caller's encoder does: an Encoder
// with SetEscapeHTML(false) writes them as they are.
func (m Message) MarshalJSON() ([]byte, error) {
	j := jsonMessage{Topic: m.Topic, Epoch: formatEpoch(m.Epoch), Seq: m.Seq, Time: m.Time}
	if utf8.Valid(m.Data) {
		j.Data = string(m.Data)
	} else {
		j.Data, j.Encoding = base64.StdEncoding.EncodeToString(m.Data), "base64"
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // the caller's encoder escapes what it returns if it is asked to
	if err := enc.Encode(j); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (m *Message) UnmarshalJSON(b []byte) error {
	var j jsonMessage
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	epoch, err := parseEpoch(j.Epoch)
	if err != nil {
		return fmt.Errorf("clientmgr: message epoch: %w", err)
	}
	data := []byte(j.Data)
	switch j.Encoding {
	case "":
	case "base64":
		if data, err = base64.StdEncoding.DecodeString(j.Data); err != nil {
			return fmt.Errorf("clientmgr: message data: %w", err)
		}
	default:
		return fmt.Errorf("clientmgr: message data: unknown encoding %q", j.Encoding)
	}
	*m = Message{Topic: j.Topic, Epoch: epoch, Seq: j.Seq, Data: data, Time: j.Time}
	return nil
}

// A Cursor is a client's position in a topic: the epoch and Seq of the
// last message it has seen. The zero Cursor is a client that has seen
// nothing. A Cursor with Epoch 0 and a Seq is the contract's plain Seq
// cursor, taken at face value in whatever epoch the topic is; one with an
// epoch is honoured only in that epoch.
type Cursor struct {
	Epoch uint64
	Seq   uint64
}

// String returns the cursor as one opaque token, "<epoch>-<seq>" with the
// epoch in base 36 (a plain "<seq>" when there is no epoch), for a query
// parameter or an SSE event id.
func (c Cursor) String() string {
	if c.Epoch == 0 {
		return strconv.FormatUint(c.Seq, 10)
	}
	return formatEpoch(c.Epoch) + "-" + strconv.FormatUint(c.Seq, 10)
}

// ErrInvalidCursor is returned by ParseCursor for text that String did not
// make.
var ErrInvalidCursor = errors.New("clientmgr: invalid cursor")

// ParseCursor reads what Cursor.String writes; "" is the zero Cursor.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	epochText, seqText, hasEpoch := strings.Cut(s, "-")
	if !hasEpoch {
		epochText, seqText = "", s
	}
	epoch, errEpoch := parseEpoch(epochText)
	seq, errSeq := strconv.ParseUint(seqText, 10, 64)
	if errEpoch != nil || errSeq != nil || (hasEpoch && epoch == 0) {
		return Cursor{}, fmt.Errorf("%w: %q", ErrInvalidCursor, s)
	}
	return Cursor{Epoch: epoch, Seq: seq}, nil
}

// MarshalText and UnmarshalText make a Cursor its String form in JSON and
// other text encodings.
func (c Cursor) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

func (c *Cursor) UnmarshalText(b []byte) error {
	parsed, err := ParseCursor(string(b))
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

func formatEpoch(e uint64) string {
	if e == 0 {
		return ""
	}
	return strconv.FormatUint(e, 36)
}

func parseEpoch(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 36, 64)
}

// lastEpoch is the newest epoch NewEpoch has handed out in this process.
var lastEpoch atomic.Uint64

// NewEpoch returns a new epoch for a sequence that starts now: the time in
// nanoseconds, made larger than any epoch returned before in this process,
// so that two sequences never share one, and a sequence started after a
// restart has an epoch the clients of the earlier one have not seen.
func NewEpoch() uint64 {
	for {
		last := lastEpoch.Load()
		e := max(uint64(time.Now().UnixNano()), last+1)
		if lastEpoch.CompareAndSwap(last, e) {
			return e
		}
	}
}

// validTopic reports whether name can be a topic: 1 to MaxTopicLen bytes
// of UTF-8 with no control characters.
func validTopic(name string) bool {
	if name == "" || len(name) > MaxTopicLen || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}
