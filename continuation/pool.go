package continuation

import "sync"

// pool bounds how many dispatches run at once. It owns no goroutines: the
// request's own net/http goroutine runs its dispatches once it holds a slot,
// so a dispatch costs no goroutine handoff (BenchmarkPoolDesigns compares
// this with handing each dispatch to a fixed set of worker goroutines).
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

// acquireNew takes a slot for c's first dispatch, waiting in the bounded
// queue of new requests until a slot frees up or stop is closed.
func (p *pool) acquireNew(c *Continuation, stop, shutdown <-chan struct{}) acquireResult {
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
	sig := c.signalChan()
	p.fresh.push(c)
	p.mu.Unlock()
	p.queueGauge.Add(1)

	select {
	case <-sig:
		return acquired
	case <-stop:
	case <-shutdown:
	}
	p.mu.Lock()
	if c.queued {
		p.fresh.remove(c)
		p.mu.Unlock()
		p.queueGauge.Add(-1)
		return abandoned
	}
	// release handed us the slot while we were giving up. Dispatch anyway:
	// the slot is ours, and the handler sees the cancelled context or gets
	// ErrShutdown from Suspend.
	p.mu.Unlock()
	<-sig
	return acquired
}

// acquireAgain takes a slot for a redispatch of an admitted request. It
// never gives up: the request was admitted and its waker is owed a dispatch.
func (p *pool) acquireAgain(c *Continuation) {
	p.mu.Lock()
	if p.free > 0 {
		p.free--
		p.mu.Unlock()
		return
	}
	sig := c.signalChan()
	p.again.push(c)
	p.mu.Unlock()
	p.queueGauge.Add(1)
	<-sig
}

// release frees the caller's slot, handing it straight to a waiter if any.
func (p *pool) release() {
	p.mu.Lock()
	var next *Continuation
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
	p.mu.Unlock()
	if next != nil {
		p.queueGauge.Add(-1)
		next.signal()
	}
}

// waitQueue is an intrusive FIFO list of continuations waiting for a slot;
// the links live in the Continuation, so waiting allocates nothing and an
// abandoned wait is removed in O(1). Guarded by pool.mu.
type waitQueue struct {
	head, tail *Continuation
	len        int
}

func (q *waitQueue) push(c *Continuation) {
	c.queued = true
	c.prevWaiter, c.nextWaiter = q.tail, nil
	if q.tail != nil {
		q.tail.nextWaiter = c
	} else {
		q.head = c
	}
	q.tail = c
	q.len++
}

func (q *waitQueue) pop() *Continuation {
	c := q.head
	q.remove(c)
	return c
}

func (q *waitQueue) remove(c *Continuation) {
	if c.prevWaiter != nil {
		c.prevWaiter.nextWaiter = c.nextWaiter
	} else {
		q.head = c.nextWaiter
	}
	if c.nextWaiter != nil {
		c.nextWaiter.prevWaiter = c.prevWaiter
	} else {
		q.tail = c.prevWaiter
	}
	c.prevWaiter, c.nextWaiter = nil, nil
	c.queued = false
	q.len--
}
