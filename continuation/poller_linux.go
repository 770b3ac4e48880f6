package continuation

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// pollerSupported says whether this platform has a poller for detached
// connections.
const pollerSupported = true

// poller keeps the Dispatcher's detached requests: it knows them all (for
// Drain), and watches their connections with epoll for the client hanging
// up, all from one goroutine. It asks the kernel only for hang-ups and
// errors (EPOLLRDHUP, EPOLLHUP, EPOLLERR), never for readability: bytes a
// client sends after its request (a pipelined request) stay in the kernel
// for net/http to read once the connection is handed back.
//
// A connection is removed from the epoll set before anyone closes it or
// hands it back: its file descriptor's number may be reused at once. Each
// registration is a slot in a table, named in the epoll event by its
// index and a generation, so that an event that was already on its way
// when its registration ended cannot reach the slot's next occupant.
type poller struct {
	epfd    int
	wakefd  int // an eventfd: written to stop the goroutine
	hangUp  func(*Continuation)
	logger  *slog.Logger
	stopped chan struct{}

	mu       sync.Mutex
	slots    []pollSlot
	free     []int32
	n        int // registrations in use
	stopping bool
}

type pollSlot struct {
	c        *Continuation
	conn     syscall.RawConn // nil if the connection cannot be watched
	gen      uint32
	watching bool // in the epoll set
}

// pollHandle names one registration.
type pollHandle struct {
	slot int32
	gen  uint32
}

// wakeSlot is the slot number that stands for the eventfd in events.
const wakeSlot = -1

const pollEvents = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR

// newPoller starts a poller whose goroutine calls hangUp for each
// detached request whose client hangs up. Stop stops it.
func newPoller(hangUp func(*Continuation), logger *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("continuation: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("continuation: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("continuation: epoll_ctl: %w", err)
	}
	p := &poller{epfd: epfd, wakefd: wakefd, hangUp: hangUp, logger: logger, stopped: make(chan struct{})}
	go p.run()
	return p, nil
}

// add registers c, detached with conn, and watches conn if it can: one
// that gives no file descriptor, or that epoll refuses, is not watched,
// and its request is not told of its client leaving (it ends by Resume,
// Complete, expiry or Drain).
func (p *poller) add(c *Continuation, conn net.Conn) pollHandle {
	p.mu.Lock()
	defer p.mu.Unlock()
	var i int32
	if n := len(p.free); n > 0 {
		i = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		p.slots = append(p.slots, pollSlot{})
		i = int32(len(p.slots) - 1)
	}
	s := &p.slots[i]
	s.c = c
	p.n++
	h := pollHandle{slot: i, gen: s.gen}
	rc, err := rawConn(conn)
	if err != nil {
		return h
	}
	ev := unix.EpollEvent{Events: pollEvents, Fd: i, Pad: int32(s.gen)}
	var ctlErr error
	if err := rc.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	}); err == nil && ctlErr == nil {
		s.conn, s.watching = rc, true
	}
	return h
}

// remove ends a registration, taking its connection out of the epoll set
// first; the caller may then close the connection or hand it back.
func (p *poller) remove(h pollHandle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.slots[h.slot]
	if s.gen != h.gen || s.c == nil {
		return
	}
	p.unwatchLocked(s)
	*s = pollSlot{gen: s.gen + 1}
	p.free = append(p.free, h.slot)
	p.n--
}

// unwatch takes a registration's connection out of the epoll set but
// keeps the request registered: its handler took the connection over.
func (p *poller) unwatch(h pollHandle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := &p.slots[h.slot]; s.gen == h.gen {
		p.unwatchLocked(s)
	}
}

func (p *poller) unwatchLocked(s *pollSlot) {
	if !s.watching {
		return
	}
	s.watching = false
	// Control fails only if the connection is closed already, which took
	// it out of the epoll set.
	_ = s.conn.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// registered returns the requests registered now.
func (p *poller) registered() []*Continuation {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := make([]*Continuation, 0, p.n)
	for _, s := range p.slots {
		if s.c != nil {
			cs = append(cs, s.c)
		}
	}
	return cs
}

// run waits for hang-ups until stop. A hung-up connection leaves the
// epoll set at once (the event would repeat), and its request hears of it
// outside the lock.
func (p *poller) run() {
	defer close(p.stopped)
	events := make([]unix.EpollEvent, 128)
	var hungUp []*Continuation
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// EBADF, EFAULT or EINVAL: not a condition of the system
			// but a bug. Requests still end by their other endings.
			p.logger.Error("continuation: poller stopped: no more hang-ups of detached clients will be noticed", "err", err)
			return
		}
		hungUp = hungUp[:0]
		p.mu.Lock()
		stop := p.stopping
		for _, ev := range events[:n] {
			if ev.Fd == wakeSlot {
				continue
			}
			s := &p.slots[ev.Fd]
			if s.gen != uint32(ev.Pad) || !s.watching {
				continue // ended while the event was on its way
			}
			p.unwatchLocked(s)
			hungUp = append(hungUp, s.c)
		}
		p.mu.Unlock()
		for i, c := range hungUp {
			p.hangUp(c)
			hungUp[i] = nil
		}
		if stop {
			return
		}
	}
}

// stop stops the goroutine and closes the poller's descriptors. Nothing
// may be registered any more.
func (p *poller) stop() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1 // an eventfd counter is a native-endian uint64; 1 is non-zero either way
	_, _ = unix.Write(p.wakefd, one[:])
	<-p.stopped
	unix.Close(p.wakefd)
	unix.Close(p.epfd)
}

// rawConn returns the socket of conn.
func rawConn(conn net.Conn) (syscall.RawConn, error) {
	sc, ok := socketOf(conn).(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}
