package clientmgr

import (
	"context"
	"fmt"
	"sync"
)

// A Subscription receives a topic's messages for a reader that stays
// connected, a WebSocket's writer say, rather than a request that suspends
// and is dispatched again. It keeps the registration rule: every message
// after the cursor is in a batch, without a gap, or the batch says it is
// incomplete. Its methods other than Close are for one goroutine, the
// reader's.
type Subscription struct {
	m     *Manager
	topic string
	cl    *client
	once  sync.Once
	err   error // why Take can take nothing more; the reader's own
}

// Subscribe starts a subscription to topic from the cursor, as
// RegisterCursor registers a continuation: what the history holds after
// it is there at once. ready is called whenever the subscription has
// something to take after the last Take (a message, or an incomplete or
// ended batch); it runs on the goroutine that delivers, so it must not
// block, nor call the Subscription's methods: a send on a channel with
// room for one, say. It returns the errors RegisterCursor returns.
func (m *Manager) Subscribe(ctx context.Context, topicName string, after Cursor, ready func()) (*Subscription, error) {
	switch {
	case m.closed.Load():
		return nil, ErrClosed
	case !validTopic(topicName):
		return nil, fmt.Errorf("%w: %q", ErrInvalidTopic, topicName)
	case ready == nil:
		panic("clientmgr: Subscribe with a nil ready function")
	}
	s := &Subscription{m: m, topic: topicName, cl: &client{m: m, ready: ready}}
	if err := s.arm(ctx, after); err != nil {
		return nil, err
	}
	return s, nil
}

// arm registers the subscription's client on its topic from after.
func (s *Subscription) arm(ctx context.Context, after Cursor) error {
	cl := s.cl
	return s.m.register(ctx, s.topic, after, cl, func(t *topic) (*part, error) {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.sealed { // Close came first: registering would outlive it
			return nil, ErrSubscriptionClosed
		}
		cl.first = part{t: t, batch: Batch{Topic: t.name, Complete: true, Next: after}}
		cl.parts, cl.woken, cl.held = append(cl.parts[:0], &cl.first), false, 0
		return &cl.first, nil
	})
}

// Take returns what arrived since the last Take (or Subscribe): the
// messages after the cursor without a gap, whether they are complete, and
// the next cursor. The subscription goes on from there; if the batch
// ended early (a message did not follow, a new epoch, WithMaxBatch), Take
// reads the history from its end within ctx, as a new registration would,
// and returns that read's error with the batch, which is valid either
// way. After an error the subscription takes nothing more (Take returns
// the error again, with an empty batch): Subscribe again from the batch's
// Next. After Close, Take returns ErrSubscriptionClosed.
func (s *Subscription) Take(ctx context.Context) (Batch, error) {
	if s.err != nil {
		return Batch{Topic: s.topic}, s.err
	}
	cl := s.cl
	cl.mu.Lock()
	if cl.sealed {
		cl.mu.Unlock()
		s.err = ErrSubscriptionClosed
		return Batch{Topic: s.topic}, s.err
	}
	p := cl.parts[0]
	b := p.batch
	if p.state != finished {
		p.batch = Batch{Topic: b.Topic, Complete: true, Next: b.Next}
		cl.woken, cl.held = false, 0
		cl.mu.Unlock()
		return b, nil
	}
	cl.mu.Unlock()
	s.m.unsubscribe(p.t, cl)
	if err := s.arm(ctx, b.Next); err != nil {
		s.err = err // the registration is gone: nothing joins it any more
		return b, err
	}
	return b, nil
}

// Close ends the subscription: no more messages join it, and ready is not
// called again once Close has returned.
func (s *Subscription) Close() {
	s.once.Do(func() {
		cl := s.cl
		cl.mu.Lock()
		cl.sealed = true
		var t *topic
		if len(cl.parts) > 0 { // none after a Take that could not register again
			t = cl.parts[0].t
		}
		cl.mu.Unlock()
		if t != nil {
			s.m.unsubscribe(t, cl)
		}
	})
}
