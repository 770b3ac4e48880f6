package hub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/cometkit/cometkit/clientmgr"
)

// Version is the version of the wire format this package speaks. A
// WebSocket client asks for it with the subprotocol [Subprotocol]; a
// long-poll or an event stream with the query parameter v=1. A request
// without either is taken as version 1.
const Version = 1

// Subprotocol is the WebSocket subprotocol of version 1 of the wire format.
const Subprotocol = "cometkit-hub.v1"

// The close codes the hub ends a WebSocket with. A client reconnects,
// after a back-off, on 1001, 1006, 1011 and 4000 to 4099, and resumes from
// its cursors; on 4400 to 4499 something must change first (a token, a
// bug), and reconnecting as before would only be refused again.
const (
	CloseNormal             = 1000 // the client closed
	CloseGoingAway          = 1001 // the hub is shutting down: reconnect, after a back-off
	CloseUnsupportedData    = 1003 // a binary message: the wire format is text
	CloseMessageTooBig      = 1009 // a message larger than WithMaxMessageSize
	CloseInternalError      = 1011 // the application's hook panicked
	ClosePingTimeout        = 4000 // no pong within WithPingTimeout
	CloseSlowConsumer       = 4008 // the send queue overflowed, or a write took longer than WithWriteTimeout
	CloseTooManyConnections = 4029 // WithMaxConnsPerAddr: reconnect after a longer back-off
	CloseBadRequest         = 4400 // a message that is not a client frame
	CloseForbidden          = 4403 // the Authorizer refused the connection
)

// The error codes of error frames.
const (
	codeBadRequest         = "bad_request"          // a frame or request the hub cannot read
	codeUnsupportedVersion = "unsupported_version"  // a version of the wire format the hub does not speak
	codeForbidden          = "forbidden"            // the Authorizer refused the connection, the subscribe or the publish
	codeTooManyTopics      = "too_many_topics"      // WithMaxTopics
	codeTooLarge           = "too_large"            // WithMaxMessageSize, or the Manager's
	codeRateLimited        = "rate_limited"         // WithPublishRate
	codeTooManyConnections = "too_many_connections" // WithMaxConnsPerAddr
	codeRejected           = "rejected"             // the PublishHook refused the data
	codeUnavailable        = "unavailable"          // the Manager or its broker failed, or is closing
)

// The ops of client frames.
const (
	opSubscribe   = "subscribe"
	opUnsubscribe = "unsubscribe"
	opPublish     = "publish"
	opPing        = "ping"
)

// clientFrame is what a client sends: one WebSocket message, or one
// element of a long-poll's array. Fields the hub does not know are
// ignored, so that a later version may add some.
type clientFrame struct {
	Op       string          `json:"op"`
	Topic    string          `json:"topic"`
	Cursor   string          `json:"cursor"`
	Data     *string         `json:"data"`
	Encoding string          `json:"encoding"`
	ID       json.RawMessage `json:"id"`
}

// errBadFrame wraps every reason a frame cannot be read.
var errBadFrame = errors.New("not a client frame")

// maxIDLen bounds the id a client gives a publish, which the hub echoes.
const maxIDLen = 64

// parseFrame reads one client frame and checks its shape: a known op, with
// the fields that op needs, of the right types. What it says is checked
// later (may the client subscribe to this topic? is the cursor one the hub
// gave?).
func parseFrame(b []byte) (clientFrame, error) {
	var f clientFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: %v", errBadFrame, err)
	}
	return f, f.check()
}

func (f *clientFrame) check() error {
	switch f.Op {
	case opPing:
		return nil
	case opSubscribe, opUnsubscribe, opPublish:
	case "":
		return fmt.Errorf("%w: no op", errBadFrame)
	default:
		return fmt.Errorf("%w: unknown op %q", errBadFrame, f.Op)
	}
	if f.Topic == "" {
		return fmt.Errorf("%w: %s without a topic", errBadFrame, f.Op)
	}
	if f.Op != opPublish {
		return nil
	}
	switch {
	case f.Data == nil:
		return fmt.Errorf("%w: publish without data", errBadFrame)
	case f.Encoding != "" && f.Encoding != "base64":
		return fmt.Errorf("%w: unknown encoding %q", errBadFrame, f.Encoding)
	case len(f.ID) > maxIDLen:
		return fmt.Errorf("%w: an id longer than %d bytes", errBadFrame, maxIDLen)
	case len(f.ID) > 0 && f.ID[0] != '"' && f.ID[0] != '-' && (f.ID[0] < '0' || f.ID[0] > '9'):
		return fmt.Errorf("%w: an id that is neither a number nor a string", errBadFrame)
	}
	return nil
}

// data returns a publish's data, decoded from base64 if it says so.
func (f *clientFrame) data() ([]byte, error) {
	if f.Encoding == "base64" {
		return base64.StdEncoding.DecodeString(*f.Data)
	}
	return []byte(*f.Data), nil
}

// parseFrames reads a long-poll's body: a JSON array of client frames.
func parseFrames(b []byte) ([]clientFrame, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: the body is not a JSON array of frames: %v", errBadFrame, err)
	}
	frames := make([]clientFrame, len(raw))
	for i, r := range raw {
		var err error
		if frames[i], err = parseFrame(r); err != nil {
			return nil, fmt.Errorf("frame %d: %w", i, err)
		}
	}
	return frames, nil
}

// frame is every server frame but message, whose fields come from
// clientmgr.Message (see messageFrame).
type frame struct {
	Type    string          `json:"type"`
	Topic   string          `json:"topic,omitempty"`
	Cursor  string          `json:"cursor,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	RetryMs int64           `json:"retry_ms,omitempty"`
}

// marshal encodes v as JSON without escaping <, > and & (json.Marshal's
// default, for JSON inside HTML): frames are read by JSON parsers only, and
// a message of "<" would otherwise cost six bytes for each one in every
// answer, stream and queue.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// encode marshals a frame; nothing in it can fail to marshal.
func (f frame) encode() []byte {
	b, err := marshal(f)
	if err != nil {
		panic("hub: encoding a frame: " + err.Error())
	}
	return b
}

func subscribedFrame(topic string, at clientmgr.Cursor) []byte {
	return frame{Type: "subscribed", Topic: topic, Cursor: at.String()}.encode()
}

func missedFrame(topic string, from clientmgr.Cursor) []byte {
	return frame{Type: "missed", Topic: topic, Cursor: from.String()}.encode()
}

func errorFrame(code, message string) frame {
	return frame{Type: "error", Code: code, Message: message}
}

var (
	pingFrame = frame{Type: "ping"}.encode()
	pongFrame = frame{Type: "pong"}.encode()
)

// messageFrame encodes a message as a server frame: the fields
// clientmgr.Message marshals (topic, epoch, seq, time, data and, for data
// that is not UTF-8, encoding), with its type and its cursor.
func messageFrame(m clientmgr.Message) []byte {
	body, err := marshal(m)
	if err != nil || len(body) < 2 || body[0] != '{' {
		panic(fmt.Sprintf("hub: encoding a message: %v", err))
	}
	var b bytes.Buffer
	b.Grow(len(body) + 64)
	b.WriteString(`{"type":"message","cursor":`)
	b.WriteString(strconv.Quote(m.Cursor().String()))
	b.WriteByte(',')
	b.Write(body[1:])
	return b.Bytes()
}

// A budget is how many bytes of messages one answer may still carry: a
// long-poll's answer, or one write of an event stream, which the Dispatcher's
// worker writes and the hub holds whole until then. Messages beyond it wait
// in the topic's history, and the client, whose cursor is the last message
// it got, reads them with its next poll or write. The first message of an
// answer always goes, however large, so that every answer makes progress.
type budget struct {
	left  int
	taken bool // a message is in the answer already
}

// take reports whether a frame of n bytes still fits, and counts it.
func (b *budget) take(n int) bool {
	if b.taken && n > b.left {
		return false
	}
	b.left -= n
	b.taken = true
	return true
}

// batchFrames turns what a subscription received into frames: a missed
// frame first when the batch says messages may be missing before these,
// then as many of the messages as room allows.
func batchFrames(b clientmgr.Batch, out [][]byte, room *budget) [][]byte {
	if !b.Complete {
		out = append(out, missedFrame(b.Topic, resumedFrom(b)))
	}
	for _, m := range b.Messages {
		f := messageFrame(m)
		if !room.take(len(f)) {
			break // the rest waits in the history for the next poll
		}
		out = append(out, f)
	}
	return out
}

// resumedFrom is where an incomplete batch goes on from: just before its
// first message, or, with none, where the topic stands.
func resumedFrom(b clientmgr.Batch) clientmgr.Cursor {
	if len(b.Messages) > 0 {
		first := b.Messages[0]
		return clientmgr.Cursor{Epoch: first.Epoch, Seq: first.Seq - 1}
	}
	return b.Next
}

// joinFrames encodes frames as a JSON array, a long-poll's answer.
func joinFrames(frames [][]byte) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, f := range frames {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(f)
	}
	b.WriteString("]\n")
	return b.Bytes()
}
