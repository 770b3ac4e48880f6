package continuation

import (
	"context"
	"sync"
)

// pool bounds how many dispatches run at once. It owns no goroutines: the
// request's own net/http goroutine runs its dispatches once it holds a slot,
// so a dispatch costs no goroutine handoff (the alternative is measured in
// docs/benchmarks.md, "Design choices in the engine"). A detached request
// has no goroutine of its own: when it is granted a slot, the slot comes
// with it to whoever takes it (schedule's caller starts a goroutine; a
// goroutine that releases its slot runs the request's step itself, if it
// has nothing else to do).
//
// Requests that find every slot taken wait in one of two FIFO queues: new
// requests (bounded by the queue size, beyond which they are refused) and
// redispatches of admitted requests (never refused). A freed slot is handed
// straight to a waiter, new requests first (see freshBurst).
type pool struct {
	mu          sync.Mutex
	free        int
	maxWaiting  int // new requests allowed to wait
	fresh       waitQueue
	again       waitQueue
	freshStreak int // slots given to new requests in a row while redispatches waited
	queueGauge  gaugeAdder
}

// A waiter is a request's place in the pool's queues. Each request has
// one (Continuation embeds it), so waiting allocates nothing; all its
// fields belong to the pool and are guarded by pool.mu.
type waiter struct {
	wake       chan struct{} // where release hands over a slot to a goroutine that waits; set by acquire
	detached   *Continuation // or the detached request that release hands the slot with; set by schedule
	queued     bool
	prev, next *waiter
}

// freshBurst is how many slots in a row new requests may take while
// redispatches wait: new requests go first, so the re-polls that follow a
// broadcast do not pile up behind it and overflow the queue, but at least
// one slot in four still goes to a redispatch, so a flood of new requests
// cannot starve admitted ones.
const freshBurst = 3

type gaugeAdder interface{ Add(float64) }

func newPool(workers, queueSize int, g gaugeAdder) *pool {
	return &pool{free: workers, maxWaiting: queueSize, queueGauge: g}
}

// acquireResult says how a new request's wait for a slot ended.
type acquireResult int

const (
	acquired acquireResult = iota
	queueFull
	abandoned // the client went away or the dispatcher shut down first
)

// acquireNew takes a slot for a request's first dispatch, waiting in the
// bounded queue of new requests until a slot frees up, the request's
// context ends or shutdown is closed. A slot handed over arrives through
// wake, which nothing else uses while the request waits here. The
// context's Done is asked for only when the request queues: it makes a
// channel that a request which detaches would keep for its whole wait.
func (p *pool) acquireNew(w *waiter, wake *wakeup, ctx context.Context, shutdown <-chan struct{}) acquireResult {
	p.mu.Lock()
	if p.free > 0 {
		p.free--
		p.mu.Unlock()
		return acquired
	}
	if p.fresh.len >= p.maxWaiting {
		p.mu.Unlock()
		return queueFull
	}
	ch := wake.channel()
	w.wake = ch
	p.fresh.push(w)
	p.mu.Unlock()
	p.queueGauge.Add(1)

	select {
	case <-ch:
		return acquired
	case <-ctx.Done():
	case <-shutdown:
	}
	p.mu.Lock()
	if w.queued {
		p.fresh.remove(w)
		p.mu.Unlock()
		p.queueGauge.Add(-1)
		return abandoned
	}
	// release handed us the slot while we were giving up. Dispatch anyway:
	// the slot is ours, and the handler sees the cancelled context or gets
	// ErrShutdown from Suspend.
	p.mu.Unlock()
	<-ch
	return acquired
}

// acquireAgain takes a slot for a redispatch of an admitted request, with
// wake as in acquireNew. It never gives up: the request was admitted and
// its waker is owed a dispatch.
func (p *pool) acquireAgain(w *waiter, wake *wakeup) {
	p.mu.Lock()
	if p.free > 0 {
		p.free--
		p.mu.Unlock()
		return
	}
	ch := wake.channel()
	w.wake = ch
	p.again.push(w)
	p.mu.Unlock()
	p.queueGauge.Add(1)
	<-ch
}

// schedule takes a slot for the next step of detached request c, which
// has no goroutine to wait with: if one is free it reports true, and the
// caller starts c's step on a new goroutine; otherwise c queues with the
// redispatches (and like them is never refused), and release hands it
// over with a slot. It never blocks, so it may be called with any lock
// held.
func (p *pool) schedule(w *waiter, c *Continuation) bool {
	p.mu.Lock()
	if p.free > 0 {
		p.free--
		p.mu.Unlock()
		return true
	}
	w.detached = c
	p.again.push(w)
	p.mu.Unlock()
	p.queueGauge.Add(1)
	return false
}

// release frees the caller's slot, handing it straight to a waiter if any.
// A goroutine that waits is woken with it; a detached request is returned
// with it instead, and the caller must run that request's step: on its
// own goroutine if it has nothing else to do, else on a new one.
func (p *pool) release() (next *Continuation) {
	p.mu.Lock()
	var w *waiter
	switch {
	case p.fresh.len > 0 && (p.again.len == 0 || p.freshStreak < freshBurst):
		w = p.fresh.pop()
		p.freshStreak++
	case p.again.len > 0:
		w = p.again.pop()
		p.freshStreak = 0
	default:
		p.free++
	}
	var wake chan struct{}
	if w != nil {
		wake, next = w.wake, w.detached
		w.wake, w.detached = nil, nil
	}
	p.mu.Unlock()
	if w != nil {
		p.queueGauge.Add(-1)
	}
	if wake != nil {
		wake <- struct{}{}
	}
	return next
}

// waitQueue is an intrusive FIFO list of waiters, so that an abandoned
// wait is removed in O(1). Guarded by pool.mu.
type waitQueue struct {
	head, tail *waiter
	len        int
}

func (q *waitQueue) push(w *waiter) {
	w.queued = true
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.len++
}

func (q *waitQueue) pop() *waiter {
	w := q.head
	q.remove(w)
	return w
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	q.len--
}
