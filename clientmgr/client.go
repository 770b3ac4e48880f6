package clientmgr

import (
	"sync"

	"github.com/cometkit/cometkit/continuation"
)

// client is a Manager's state for one continuation: what was delivered to
// it since it registered, and where it is registered. It lives in the
// continuation's attributes and listens to it, so it learns when the next
// dispatch starts (the batch is sealed and the registrations end) and when
// the request finishes.
type client struct {
	m *Manager

	mu      sync.Mutex
	handle  continuation.Handle // the suspension the registrations belong to
	batch   []Message
	sealed  bool // the dispatch that reads batch has started: deliver no more
	topics  []*topic
	dropped uint64 // messages dropped from this batch for WithMaxBatch
}

// deliver adds msg to the batch and resumes the continuation if the batch
// was empty. It never blocks; it reports whether the client is still
// registered (false once sealed).
func (cl *client) deliver(msg Message) bool {
	h, wake, ok := cl.add(msg)
	if wake {
		_ = h.Resume() // already resumed, expired or gone: the batch waits for its dispatch
	}
	return ok
}

// add adds msg to the batch, and returns the suspension to resume if the
// batch was empty (wake): the caller resumes it, when it can do so without
// holding a lock the redispatch will want.
func (cl *client) add(msg Message) (h continuation.Handle, wake, ok bool) {
	cl.mu.Lock()
	if cl.sealed {
		cl.mu.Unlock()
		return h, false, false
	}
	wake = len(cl.batch) == 0
	if len(cl.batch) == cl.m.cfg.maxBatch {
		// Oldest first out; the handler sees the gap as a Seq jump and the
		// client's cursor brings the dropped ones back from the history.
		cl.batch = append(cl.batch[:0], cl.batch[1:]...)
		cl.dropped++
		cl.m.metrics.batchDropped.Inc()
	}
	cl.batch = append(cl.batch, msg)
	h = cl.handle
	cl.mu.Unlock()
	cl.m.metrics.deliveries.Inc()
	return h, wake, true
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
	topics := cl.topics
	cl.topics = nil
	cl.mu.Unlock()
	for _, t := range topics {
		cl.m.unsubscribe(t, cl)
	}
}

// OnDispatch, OnTimeout and OnComplete make client a
// continuation.DispatchListener.
func (cl *client) OnDispatch(*continuation.Continuation) { cl.seal() }
func (cl *client) OnTimeout(*continuation.Continuation)  {} // the expiry's dispatch seals
func (cl *client) OnComplete(*continuation.Continuation) { cl.seal() }

// Messages returns, in the dispatch after a registration, every message
// delivered to c while it was registered, in Seq order per topic. It
// returns nil for a continuation that was never registered with a Manager
// (or if called before the registration's dispatch). Call it before
// registering c again: a new registration starts a new batch.
func Messages(c *continuation.Continuation) []Message {
	var out []Message
	for _, cl := range clientsOf(c) {
		cl.mu.Lock()
		if cl.sealed {
			out = append(out, cl.batch...)
		}
		cl.mu.Unlock()
	}
	return out
}

// Dropped returns how many messages were dropped from c's batches because
// of WithMaxBatch; with Messages it tells a handler that a gap is not loss
// but back-pressure.
func Dropped(c *continuation.Continuation) uint64 {
	var n uint64
	for _, cl := range clientsOf(c) {
		cl.mu.Lock()
		n += cl.dropped
		cl.mu.Unlock()
	}
	return n
}

// clientsAttr holds a continuation's clients, one per Manager it was
// registered with.
const clientsAttr = "github.com/cometkit/cometkit/clientmgr.clients"

type clientList struct {
	mu   sync.Mutex
	list []*client
}

func clientsOf(c *continuation.Continuation) []*client {
	cls, _ := c.Attribute(clientsAttr).(*clientList)
	if cls == nil {
		return nil
	}
	cls.mu.Lock()
	defer cls.mu.Unlock()
	return append([]*client(nil), cls.list...)
}
