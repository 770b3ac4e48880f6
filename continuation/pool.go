package continuation

import (
	"context"
	"sync"
)

// pool bounds how many dispatches run at once. It owns no goroutines: the
// request's own net/http goroutine runs its dispatches once it holds a slot,
// so a dispatch costs no goroutine handoff (the alternative is measured in
// docs/benchmarks.md, "Design choices in the engine"). A detached request
// has no goroutine of its own: the pool starts one for it when it grants
// it a slot, which the goroutine gives back when it is done.
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
	run        func()        // or, for a request without a goroutine, what release starts with the slot; set by schedule
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

// schedule takes a slot for the next step of a detached request, which has
// no goroutine to wait with: run starts on a new goroutine, holding the
// slot, now if a slot is free, or else when release hands one over (the
// request queues with the redispatches, and like them is never refused).
// It never blocks, so it may be called with any lock held.
func (p *pool) schedule(w *waiter, run func()) {
	p.mu.Lock()
	if p.free > 0 {
		p.free--
		p.mu.Unlock()
		go run()
		return
	}
	w.run = run
	p.again.push(w)
	p.mu.Unlock()
	p.queueGauge.Add(1)
}

// release frees the caller's slot, handing it straight to a waiter if any.
func (p *pool) release() {
	p.mu.Lock()
	var next *waiter
	switch {
	case p.fresh.len > 0 && (p.again.len == 0 || p.freshStreak < freshBurst):
		next = p.fresh.pop()
		p.freshStreak++
	case p.again.len > 0:
		next = p.again.pop()
		p.freshStreak = 0
	default:
		p.free++
	}
	var wake chan struct{}
	var run func()
	if next != nil {
		wake, run = next.wake, next.run
		next.wake, next.run = nil, nil
	}
	p.mu.Unlock()
	switch {
	case run != nil:
		p.queueGauge.Add(-1)
		go run()
	case wake != nil:
		p.queueGauge.Add(-1)
		wake <- struct{}{}
	}
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
