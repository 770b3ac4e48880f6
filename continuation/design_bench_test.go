package continuation_test

// Benchmarks behind the engine's design choices, each against the
// alternative: expiry by one runtime timer per suspension versus a coarse
// timing wheel, a pool that bounds the request's own goroutine versus one
// that hands every dispatch to worker goroutines, and a body read ahead
// before the request takes a worker versus one read by the handler. The
// alternatives live only here; docs/benchmarks.md has the figures.
//
//	go test -run '^$' -bench 'Timers|PoolDesigns|BodyReadAhead' -benchmem ./continuation/

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cometkit/cometkit/continuation"
)

const armed = 100_000 // suspensions waiting to expire while we measure

// BenchmarkTimers measures one suspension ending and the next starting
// (cancel, then re-arm) with 100,000 others armed, and the memory each
// armed suspension costs.
func BenchmarkTimers(b *testing.B) {
	b.Run("runtime-timer", func(b *testing.B) {
		before := inUse()
		timers := make([]*time.Timer, armed)
		for i := range timers {
			timers[i] = time.AfterFunc(time.Hour, func() {})
		}
		after := inUse()
		i := 0
		for b.Loop() {
			t := timers[i%armed]
			t.Stop()
			t.Reset(time.Hour)
			i++
		}
		b.ReportMetric(float64(after.heap-before.heap)/armed, "B/armed")
		for _, t := range timers {
			t.Stop()
		}
	})
	b.Run("wheel-100ms", func(b *testing.B) {
		w := newWheel(100*time.Millisecond, 1<<12)
		defer w.stop()
		before := inUse()
		entries := make([]*wheelEntry, armed)
		for i := range entries {
			entries[i] = &wheelEntry{fire: func() {}}
			w.add(entries[i], time.Hour)
		}
		after := inUse()
		i := 0
		for b.Loop() {
			e := entries[i%armed]
			w.remove(e)
			w.add(e, time.Hour)
			i++
		}
		b.ReportMetric(float64(after.heap-before.heap)/armed, "B/armed")
	})
}

// BenchmarkTimersFire measures 100,000 parked goroutines woken by their
// expiries at once, from arming to the last one awake: "afterfunc" is what
// the Dispatcher does (the timer's function signals the parked goroutine),
// "channel" parks on the timer's own channel, "wheel" has the wheel's
// goroutine signal each one.
func BenchmarkTimersFire(b *testing.B) {
	park := func(b *testing.B, arm func(wake chan struct{})) {
		for b.Loop() {
			var wg sync.WaitGroup
			for range armed {
				wake := make(chan struct{}, 1)
				arm(wake)
				wg.Go(func() { <-wake })
			}
			wg.Wait()
		}
	}
	b.Run("afterfunc", func(b *testing.B) {
		park(b, func(wake chan struct{}) {
			time.AfterFunc(time.Millisecond, func() { wake <- struct{}{} })
		})
	})
	b.Run("channel", func(b *testing.B) {
		park(b, func(wake chan struct{}) {
			t := time.NewTimer(time.Millisecond)
			go func() { <-t.C; wake <- struct{}{} }() // the parked goroutine's own select
		})
	})
	b.Run("wheel-1ms", func(b *testing.B) {
		w := newWheel(time.Millisecond, 1<<12) // as fine as the runtime, for a fair race
		defer w.stop()
		park(b, func(wake chan struct{}) {
			w.add(&wheelEntry{fire: func() { wake <- struct{}{} }}, time.Millisecond)
		})
	})
}

// wheel is the coarser scheme: deadlines rounded up to a tick, one list per
// tick slot, one goroutine that fires a slot's due entries each tick.
type wheel struct {
	mu    sync.Mutex
	tick  time.Duration
	slots []*wheelEntry
	now   int64 // ticks since start
	quit  chan struct{}
	done  chan struct{}
}

type wheelEntry struct {
	at         int64
	prev, next *wheelEntry
	slot       int
	fire       func()
}

func newWheel(tick time.Duration, slots int) *wheel {
	w := &wheel{tick: tick, slots: make([]*wheelEntry, slots), quit: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *wheel) add(e *wheelEntry, d time.Duration) {
	w.mu.Lock()
	e.at = w.now + int64((d+w.tick-1)/w.tick)
	e.slot = int(e.at % int64(len(w.slots)))
	e.prev, e.next = nil, w.slots[e.slot]
	if e.next != nil {
		e.next.prev = e
	}
	w.slots[e.slot] = e
	w.mu.Unlock()
}

func (w *wheel) remove(e *wheelEntry) {
	w.mu.Lock()
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		w.slots[e.slot] = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
	w.mu.Unlock()
}

func (w *wheel) run() {
	defer close(w.done)
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
		}
		w.mu.Lock()
		w.now++
		var due []*wheelEntry
		slot := int(w.now % int64(len(w.slots)))
		for e := w.slots[slot]; e != nil; {
			next := e.next
			if e.at <= w.now {
				if e.prev != nil {
					e.prev.next = e.next
				} else {
					w.slots[slot] = e.next
				}
				if e.next != nil {
					e.next.prev = e.prev
				}
				due = append(due, e)
			}
			e = next
		}
		w.mu.Unlock()
		for _, e := range due {
			e.fire()
		}
	}
}

func (w *wheel) stop() {
	close(w.quit)
	<-w.done
}

// BenchmarkPoolDesigns runs a small dispatch under a bound of 2 per CPU,
// from 64 callers per CPU: "own goroutine" takes a slot and runs the
// dispatch on the caller's goroutine (the Dispatcher's design); "handoff"
// sends it to a fixed set of worker goroutines and waits for the result.
func BenchmarkPoolDesigns(b *testing.B) {
	workers := 2 * runtime.GOMAXPROCS(0)
	dispatch := func() {
		for start := time.Now(); time.Since(start) < 2*time.Microsecond; {
		}
	}
	b.Run("own-goroutine", func(b *testing.B) {
		sem := make(chan struct{}, workers)
		b.SetParallelism(64)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				sem <- struct{}{}
				dispatch()
				<-sem
			}
		})
	})
	b.Run("handoff", func(b *testing.B) {
		jobs := make(chan chan struct{})
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for done := range jobs {
					dispatch()
					done <- struct{}{}
				}
			})
		}
		b.SetParallelism(64)
		b.RunParallel(func(pb *testing.PB) {
			done := make(chan struct{}, 1)
			for pb.Next() {
				jobs <- done
				<-done
			}
		})
		close(jobs)
		wg.Wait()
	})
}

// BenchmarkBodyReadAhead is one POST of a 1 KiB body over HTTP/1.1 on
// loopback, keep-alive, whose handler reads the body and answers: served
// by a plain net/http handler, by a Dispatcher that reads the body ahead
// (the default), and by one that streams it to the handler
// (WithBodyBuffer(0): the deadline without the copy).
func BenchmarkBodyReadAhead(b *testing.B) {
	body := strings.Repeat("x", 1<<10)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := io.ReadAll(r.Body)
		w.Write(p[:1])
	})
	for _, tt := range []struct {
		name string
		h    http.Handler
	}{
		{"net-http", echo},
		{"read-ahead", continuation.NewDispatcher(echo)},
		{"streamed", continuation.NewDispatcher(echo, continuation.WithBodyBuffer(0))},
	} {
		b.Run(tt.name, func(b *testing.B) {
			ts := httptest.NewServer(tt.h)
			defer ts.Close()
			client := ts.Client()
			defer client.CloseIdleConnections()
			for b.Loop() {
				resp, err := client.Post(ts.URL, "text/plain", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
