package clientmgr_test

import (
	"context"
	"errors"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/cometkit/cometkit/clientmgr"
)

// Topic names come from clients: any string is either a valid topic or
// ErrInvalidTopic, never a panic, and a valid one is 1–256 bytes of UTF-8
// without control characters.
func FuzzTopicName(f *testing.F) {
	for _, s := range []string{"room:lobby", "", "a\nb", "\xff", "user:42", "\u0085", string(make([]byte, 257))} {
		f.Add(s)
	}
	m := clientmgr.New(clientmgr.WithMaxTopics(1 << 20))
	f.Cleanup(func() { m.Close() })
	f.Fuzz(func(t *testing.T, topic string) {
		_, err := m.Broadcast(context.Background(), topic, []byte("x"))
		if err != nil {
			if !errors.Is(err, clientmgr.ErrInvalidTopic) {
				t.Fatalf("topic %q: %v", topic, err)
			}
			return
		}
		if topic == "" || len(topic) > clientmgr.MaxTopicLen || !utf8.ValidString(topic) {
			t.Fatalf("topic %q accepted", topic)
		}
		for _, r := range topic {
			if unicode.IsControl(r) {
				t.Fatalf("topic %q with a control character accepted", topic)
			}
		}
		msgs, complete := m.Since(topic, 0)
		if len(msgs) == 0 || !complete {
			t.Fatalf("topic %q: history lost", topic)
		}
	})
}

// Since never panics for any cursor and never returns a message at or
// before it, unless the cursor is from the future (then: everything).
func FuzzSinceCursor(f *testing.F) {
	for _, n := range []uint64{0, 1, 5, 9, 10, 11, 1 << 63, ^uint64(0)} {
		f.Add(n)
	}
	m := clientmgr.New(clientmgr.WithHistory(4))
	f.Cleanup(func() { m.Close() })
	for range 10 {
		m.Broadcast(context.Background(), "t", []byte("x"))
	}
	f.Fuzz(func(t *testing.T, after uint64) {
		msgs, complete := m.Since("t", after)
		for i, msg := range msgs {
			if after <= 10 && msg.Seq <= after {
				t.Fatalf("after %d: got Seq %d", after, msg.Seq)
			}
			if i > 0 && msg.Seq != msgs[i-1].Seq+1 {
				t.Fatalf("after %d: gap %d→%d", after, msgs[i-1].Seq, msg.Seq)
			}
		}
		if after > 10 && complete {
			t.Fatalf("a cursor from the future said complete")
		}
	})
}
