package clientmgr

import (
	"time"
	"unicode/utf8"
)

// A Message is one broadcast on a topic.
type Message struct {
	Topic string
	Seq   uint64 // per topic, starting at 1, strictly increasing, no gaps
	Data  []byte
	Time  time.Time
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

// topic is one topic's history and subscribers, guarded by its shard's
// lock. The history is a ring indexed by Seq, so looking up the messages
// after a cursor is arithmetic, never a scan.
type topic struct {
	name     string
	ring     []Message // ring[seq % len(ring)] holds seq, for the newest len(ring) seqs
	last     uint64    // Seq of the newest message; 0 before the first
	subs     map[*client]struct{}
	activity time.Time // last message, registration or unregistration
}

func newTopic(name string, history int, now time.Time) *topic {
	return &topic{name: name, ring: make([]Message, history), subs: make(map[*client]struct{}), activity: now}
}

// first returns the oldest Seq still in the history (last+1 if empty).
func (t *topic) first() uint64 {
	if n := uint64(len(t.ring)); t.last >= n {
		return t.last - n + 1
	}
	return 1
}

func (t *topic) append(msg Message) {
	t.ring[msg.Seq%uint64(len(t.ring))] = msg
	t.last = msg.Seq
	t.activity = msg.Time
}

// since returns the history after cursor, and whether it is complete:
// false when some of it fell out of the history, or when the cursor is
// from the future (a restart, or a reclaimed topic) and the whole history
// is returned.
func (t *topic) since(after uint64) ([]Message, bool) {
	complete := true
	if after > t.last {
		after, complete = 0, false
	}
	from := after + 1
	if first := t.first(); from < first {
		from = first
		complete = complete && after+1 >= first
	}
	if from > t.last {
		return nil, complete
	}
	msgs := make([]Message, 0, t.last-from+1)
	for seq := from; seq <= t.last; seq++ {
		msgs = append(msgs, t.ring[seq%uint64(len(t.ring))])
	}
	return msgs, complete
}
