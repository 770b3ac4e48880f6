package clientmgr

import (
	"slices"
	"sync"

	"github.com/cometkit/cometkit/continuation"
)

// client is a Manager's state for one reader of batches: a continuation's
// registrations of its current suspension, one part per topic, or a
// Subscription's one part. A continuation's client is kept with it (under
// an unexported key) and listens to it, so it learns when the next
// dispatch starts (the batches are sealed and the registrations end) and
// when the request finishes.
type client struct {
	m     *Manager
	ready func() // a Subscription's; nil for a continuation's

	mu     sync.Mutex
	handle continuation.Handle // the suspension the parts belong to
	parts  []*part
	sealed bool // the dispatch that reads the batches has started
	woken  bool // the suspension has been resumed for these batches
	held   int  // messages in all parts' batches, for WithMaxBatch
	// first is the part of a suspension's first registration, kept here so
	// that the usual single registration allocates nothing; the
	// suspension's dispatch ends it (seal) before the next one begins.
	first part
}

// part is one registration: a topic, and what it has received. Guarded by
// its client's mu.
type part struct {
	t     *topic
	batch Batch // Next is the position of the last message received
	state partState
	// pending holds, while the registration reads the history, what the
	// topic delivered meanwhile, to follow the history once it is read.
	pending []Message
}

type partState uint8

const (
	reading  partState = iota // the registration is reading the history; deliveries wait in pending
	live                      // deliveries join the batch
	finished                  // nothing more joins the batch: the client is to ask again
)

// begin starts a registration on t for c's current suspension. A new
// suspension starts new batches; a second registration on one topic in one
// suspension is refused.
func (cl *client) begin(t *topic, c *continuation.Continuation, after Cursor) (*part, error) {
	h := c.Handle()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.sealed || cl.handle != h {
		cl.handle, cl.parts, cl.sealed, cl.woken, cl.held = h, cl.parts[:0], false, false, 0
	}
	if !c.IsSuspended() {
		return nil, ErrNotSuspended
	}
	for _, p := range cl.parts {
		if p.t == t {
			return nil, ErrAlreadyRegistered
		}
	}
	p := &cl.first
	if len(cl.parts) > 0 {
		p = new(part)
	}
	// A new Batch each time: the last one's messages may still be in the
	// hands of the dispatch that read them.
	*p = part{t: t, batch: Batch{Topic: t.name, Complete: true, Next: after}}
	cl.parts = append(cl.parts, p)
	return p, nil
}

// offer gives a delivered message to the part. It returns the suspension
// to resume when the message makes the batch worth answering (wake).
func (cl *client) offer(p *part, msg Message) (w wakeup, wake bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	switch {
	case cl.sealed || p.state == finished:
		return w, false
	case p.state == reading:
		if len(p.pending) < cl.m.cfg.maxBatch {
			p.pending = append(p.pending, msg)
		}
		return w, false
	}
	cl.take(p, msg)
	return cl.wakeLocked()
}

// take adds msg to p's batch if it follows the batch's last position; a
// message the batch has is skipped, and one that does not follow (a gap, a
// new epoch) or does not fit (WithMaxBatch) finishes the batch, for the
// client to ask again from its cursor.
func (cl *client) take(p *part, msg Message) {
	last := p.batch.Next
	switch {
	case msg.Epoch == last.Epoch && msg.Seq <= last.Seq:
		return // already in the batch, or before the cursor
	case msg.Seq == 0 || !follows(msg, last): // a new epoch's start, or a gap
		p.state = finished
	case cl.held >= cl.m.cfg.maxBatch:
		p.state = finished
		cl.m.metrics.batchFull.Inc()
	default:
		p.batch.Messages = append(p.batch.Messages, msg)
		p.batch.Next = msg.Cursor()
		cl.held++
		cl.m.metrics.deliveries.Inc()
	}
}

// settle ends a registration's reading: the history's part of the batch,
// then what was delivered meanwhile. It reports the suspension to resume
// if the batch is worth answering already.
func (cl *client) settle(p *part, from Batch) (w wakeup, wake bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.sealed || p.state != reading {
		return w, false
	}
	p.state = live
	p.batch.Complete = p.batch.Complete && from.Complete
	p.batch.Next = from.Next
	msgs := from.Messages
	if room := cl.m.cfg.maxBatch - cl.held; len(msgs) > room {
		msgs, p.state = msgs[:room], finished
		cl.m.metrics.batchFull.Inc()
	}
	if n := len(msgs); n > 0 {
		p.batch.Messages = append(p.batch.Messages, msgs...)
		p.batch.Next = msgs[n-1].Cursor()
		cl.held += n
		cl.m.metrics.deliveries.Add(float64(n))
	}
	if p.state == live {
		// What was published while the history was read, after it.
		for _, msg := range p.pending {
			cl.take(p, msg)
		}
	}
	p.pending = nil
	return cl.wakeLocked()
}

// breakOff finishes the part's batch, reading or live, and reports the
// suspension to resume: the topic's sequence broke under it (complete
// false: ErrSequenceRewound), or messages may have skipped this node
// (Interrupted), or the Manager is closing.
func (cl *client) breakOff(p *part, complete bool) (w wakeup, wake bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.sealed {
		return w, false
	}
	p.batch.Complete = p.batch.Complete && complete
	p.state, p.pending = finished, nil
	return cl.wakeLocked()
}

// abandon drops a registration that failed after it began.
func (cl *client) abandon(p *part) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.parts = slices.DeleteFunc(cl.parts, func(q *part) bool { return q == p })
}

// wakeLocked reports how to wake the client's reader, once, when a part
// has something to answer: a message, an incomplete batch, or a finished
// one.
func (cl *client) wakeLocked() (wakeup, bool) {
	w := wakeup{h: cl.handle}
	if cl.ready != nil {
		w.sub = cl
	}
	if cl.woken {
		return w, false
	}
	for _, p := range cl.parts {
		if len(p.batch.Messages) > 0 || !p.batch.Complete || p.state == finished {
			cl.woken = true
			return w, true
		}
	}
	return w, false
}

// A wakeup wakes a client's reader: it resumes a continuation's
// suspension, or calls a Subscription's ready function.
type wakeup struct {
	h   continuation.Handle
	sub *client // a Subscription's client, or nil
}

func (w wakeup) fire() {
	if cl := w.sub; cl != nil {
		// Under the client's lock, so that none is called once Close has
		// returned.
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if !cl.sealed {
			cl.ready()
		}
		return
	}
	_ = w.h.Resume() // already resumed, expired or gone: the batch waits for its dispatch
}

func wakeAll(ws []wakeup) {
	for _, w := range ws {
		w.fire()
	}
}

// seal ends the registrations, at the start of the next dispatch or at the
// end of the request.
func (cl *client) seal() {
	cl.mu.Lock()
	if cl.sealed {
		cl.mu.Unlock()
		return
	}
	cl.sealed = true
	parts := cl.parts
	cl.mu.Unlock()
	for _, p := range parts {
		cl.m.unsubscribe(p.t, cl)
	}
}

// OnDispatch, OnTimeout and OnComplete make client a
// continuation.DispatchListener.
func (cl *client) OnDispatch(*continuation.Continuation) { cl.seal() }
func (cl *client) OnTimeout(*continuation.Continuation)  {} // the expiry's dispatch seals
func (cl *client) OnComplete(*continuation.Continuation) { cl.seal() }

// clientsKey is the attribute under which a continuation keeps its
// clients, one per Manager it was registered with.
type clientsKey struct{}

type clientList struct {
	mu   sync.Mutex
	list []*client
}

func clientsOf(c *continuation.Continuation) []*client {
	cls, _ := c.Value(clientsKey{}).(*clientList)
	if cls == nil {
		return nil
	}
	cls.mu.Lock()
	defer cls.mu.Unlock()
	// No copy: the list only grows, and an append never changes the
	// elements a reader already sees.
	return cls.list
}
