package clientmgr

import (
	"encoding/json"

	"github.com/cometkit/cometkit/continuation"
)

// A Batch is what a client gets of one topic: the messages after its
// cursor, in order and without a gap, and the cursor to ask with next.
// Manager.History returns one; Batches returns, in the dispatch after a
// registration, one per topic the continuation was registered on. In JSON
// it is what a client needs to show the messages, warn of missed ones and
// ask again:
//
//	{"topic":"room:lobby","messages":[…],"complete":true,"next":"mbk2z3q1xc-42"}
type Batch struct {
	Topic string
	// Messages follow the client's cursor with no gap: from the history
	// when it registered, then as they were published, until its next
	// dispatch began or the batch reached WithMaxBatch (the rest waits in
	// the history for the next registration).
	Messages []Message
	// Complete is false when messages before these may be missing, so the
	// client should be told it may have missed some: its cursor was from
	// another epoch (a restart, a reclaimed topic, a broker that lost its
	// data), older than the history reaches, or ahead of the topic.
	Complete bool
	// Next is the cursor to register with next time: the position of the
	// last message, or, when there is none, where the topic stands if the
	// cursor could not be honoured, else the cursor registered with.
	Next Cursor
}

// MarshalJSON encodes the batch as shown on Batch, messages as
// Message.MarshalJSON does, and no messages as [].
func (b Batch) MarshalJSON() ([]byte, error) {
	msgs := b.Messages
	if msgs == nil {
		msgs = []Message{}
	}
	return json.Marshal(struct {
		Topic    string    `json:"topic"`
		Messages []Message `json:"messages"`
		Complete bool      `json:"complete"`
		Next     Cursor    `json:"next"`
	}{b.Topic, msgs, b.Complete, b.Next})
}

// window turns what a broker's History returned for cursor after into a
// Batch: the messages that follow the cursor, and whether they are all of
// them. It is the one place that decides whether a cursor was honoured.
func window(topic string, after Cursor, msgs []Message, head Cursor) Batch {
	b := Batch{Topic: topic, Next: after, Complete: true}
	foreign := after.Epoch != 0 && after.Epoch != head.Epoch
	if foreign || after.Seq > head.Seq {
		// From another sequence, or ahead of this one: all there is, and the
		// client is told.
		b.Complete, b.Next = false, head
		b.Messages = contiguous(msgs)
	} else {
		for len(msgs) > 0 && msgs[0].Seq <= after.Seq {
			msgs = msgs[1:]
		}
		b.Messages = contiguous(msgs)
		switch {
		case len(b.Messages) > 0:
			b.Complete = b.Messages[0].Seq == after.Seq+1
		case head.Seq > after.Seq:
			b.Complete = false // the history no longer reaches back to the cursor
			b.Next = head
		}
	}
	if n := len(b.Messages); n > 0 {
		b.Next = b.Messages[n-1].Cursor()
	}
	return b
}

// contiguous returns the leading run of msgs in which each message follows
// the one before it in one epoch: a history with a hole is cut at the hole,
// and the client's next registration asks again from there.
func contiguous(msgs []Message) []Message {
	for i := 1; i < len(msgs); i++ {
		if !follows(msgs[i], msgs[i-1].Cursor()) {
			return msgs[:i]
		}
	}
	return msgs
}

// follows reports whether msg is the message right after position at: the
// next Seq of the same epoch, or, for a position with no epoch, the next
// Seq of any.
func follows(msg Message, at Cursor) bool {
	return msg.Seq == at.Seq+1 && (at.Epoch == 0 || at.Epoch == msg.Epoch)
}

// Batches returns, in the dispatch after a registration, what each of the
// continuation's registrations received: one Batch per topic, in the order
// they were registered. It returns nil for a continuation that was not
// registered with a Manager, or before that dispatch. Call it before
// registering c again: a new registration starts new batches.
func Batches(c *continuation.Continuation) []Batch {
	var out []Batch
	eachBatch(c, func(b Batch) { out = append(out, b) })
	return out
}

// Messages returns, in the dispatch after a registration, every message
// delivered to c while it was registered: the Messages of its Batches,
// topic after topic, each in Seq order. Use Batches to learn whether a
// topic's messages are complete and where the client stands.
func Messages(c *continuation.Continuation) []Message {
	var out []Message
	eachBatch(c, func(b Batch) { out = append(out, b.Messages...) })
	return out
}

// eachBatch calls f with each of c's sealed batches, in order. A sealed
// batch takes no more messages, so f may keep its slices.
func eachBatch(c *continuation.Continuation, f func(Batch)) {
	for _, cl := range clientsOf(c) {
		cl.mu.Lock()
		if cl.sealed {
			for _, p := range cl.parts {
				f(p.batch)
			}
		}
		cl.mu.Unlock()
	}
}
