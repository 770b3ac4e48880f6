package continuation

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
)

// EpollWatched returns how many connections d's poller has in its epoll
// set, as the kernel reports it (/proc/self/fdinfo), or -1 if d has no
// poller running.
func EpollWatched(d *Dispatcher) int {
	d.pollMu.Lock()
	p := d.poll
	d.pollMu.Unlock()
	if p == nil {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", p.epfd))
	if err != nil {
		panic(err)
	}
	n := strings.Count(string(b), "\ntfd:")
	return n - 1 // the eventfd that wakes the poller
}

// HoldsWriteBuffers reports whether c, detached, holds its writer's
// buffers.
func HoldsWriteBuffers(c *Continuation) bool {
	c.rwMu.Lock()
	defer c.rwMu.Unlock()
	return c.dc != nil && (c.dc.w.bw != nil || c.dc.w.pre != nil)
}

// FailPollerStart makes every poller start fail with err, and counts the
// tries, until restore is called.
func FailPollerStart(err error) (tries func() int, restore func()) {
	var n atomic.Int32
	startPoller = func(func(*Continuation), *slog.Logger) (*poller, error) {
		n.Add(1)
		return nil, err
	}
	return func() int { return int(n.Load()) }, func() { startPoller = newPoller }
}
