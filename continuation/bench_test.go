package continuation_test

// Benchmarks against the naive Go way of holding a request: a net/http
// handler that blocks on its own channel, found through a mutex-protected
// list. Each benchmark runs both in the same process, so compare the two
// within one run (the machines are noisy); docs/benchmarks.md has figures.
//
//	go test -run '^$' -bench . -benchmem ./continuation/

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cometkit/cometkit/continuation"
)

// naiveServer is the baseline: every waiting request parks its handler
// goroutine on a channel of its own, with a timeout like ours.
type naiveServer struct {
	mu      sync.Mutex
	waiting []chan string
	parked  chan struct{} // one token per request that starts waiting
}

func (s *naiveServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ch := make(chan string, 1)
	s.mu.Lock()
	s.waiting = append(s.waiting, ch)
	s.mu.Unlock()
	s.parked <- struct{}{}
	timer := time.NewTimer(continuation.DefaultTimeout)
	defer timer.Stop()
	select {
	case msg := <-ch:
		io.WriteString(w, msg)
	case <-timer.C:
		w.WriteHeader(http.StatusNoContent)
	case <-r.Context().Done():
	}
}

func (s *naiveServer) broadcast(msg string) (n int) {
	s.mu.Lock()
	list := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	for _, ch := range list {
		ch <- msg
	}
	return len(list)
}

func (s *naiveServer) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

// server is what the benchmarks need of either implementation.
type server interface {
	http.Handler
	broadcast(msg string) int
	len() int
	waitParked() // until one more request waits
}

func (s *naiveServer) waitParked() { <-s.parked }

// implementations are the servers the benchmarks compare: naive, and
// cometkit served attached and detached (over loopback; in process there
// is no connection to detach).
func implementations() []implementation {
	return []implementation{
		{"naive", func() server { return &naiveServer{parked: make(chan struct{}, 1<<16)} }, false},
		{"cometkit", func() server { return newDispatched() }, false},
		{"cometkit-detached", func() server { return newDispatched() }, true},
	}
}

type implementation struct {
	name   string
	new    func() server
	detach bool
}

// serve starts s on loopback, served with detaching if impl says so, and
// returns the server and what stops it (the Dispatcher's poller included).
func (impl implementation) serve(s server) (*httptest.Server, func()) {
	ts := httptest.NewUnstartedServer(s)
	if impl.detach {
		ts.Listener = continuation.DetachingListener(ts.Config, ts.Listener)
	}
	ts.Start()
	return ts, func() {
		if ds, ok := s.(*dispatched); ok {
			ds.d.Shutdown(context.Background())
		}
		ts.Close()
	}
}

// waitHeld waits until n requests wait: for a detached server, until they
// have detached.
func (impl implementation) waitHeld(s server, n int) {
	for i := 0; i < n; i++ {
		s.waitParked()
	}
	if ds, ok := s.(*dispatched); ok && impl.detach {
		for ds.d.Detached() < n {
			time.Sleep(time.Millisecond)
		}
	}
}

// dispatched is the waiters event source behind a Dispatcher.
type dispatched struct {
	*waiters
	d *continuation.Dispatcher
}

func newDispatched() *dispatched {
	ws := &waiters{parked: make(chan struct{}, 1<<16)}
	return &dispatched{waiters: ws, d: continuation.NewDispatcher(ws)}
}

func (s *dispatched) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.d.ServeHTTP(w, r) }

// discardWriter is a ResponseWriter that keeps nothing, so that the
// in-process benchmarks measure the framework and not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkRoundTrip is one request's suspend → resume → answer, served
// in process (no network), so the figures are the framework's own cost.
func BenchmarkRoundTrip(b *testing.B) {
	for _, impl := range implementations() {
		if impl.detach {
			continue // in process, nothing to detach
		}
		b.Run(impl.name, func(b *testing.B) {
			s := impl.new()
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			done := make(chan struct{})
			for b.Loop() {
				go func() {
					s.ServeHTTP(&discardWriter{h: http.Header{}}, req)
					done <- struct{}{}
				}()
				s.waitParked()
				s.broadcast("hello")
				<-done
			}
		})
	}
}

// BenchmarkRoundTripLoopback is the same over HTTP/1.1 on loopback, with a
// keep-alive connection: what a long-poll client sees.
func BenchmarkRoundTripLoopback(b *testing.B) {
	for _, impl := range implementations() {
		b.Run(impl.name, func(b *testing.B) {
			s := impl.new()
			ts, stop := impl.serve(s)
			defer stop()
			client := ts.Client()
			defer client.CloseIdleConnections()
			done := make(chan struct{})
			for b.Loop() {
				go func() {
					resp, err := client.Get(ts.URL)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					done <- struct{}{}
				}()
				s.waitParked()
				s.broadcast("hello")
				<-done
			}
		})
	}
}

// BenchmarkParkedMemory holds 5,000 requests parked over loopback HTTP/1.1
// and reports the heap and stack per parked request (both ends live in
// this process and count alike for both implementations). Run it with
// -benchtime=1x: each iteration parks and releases all 5,000.
func BenchmarkParkedMemory(b *testing.B) {
	benchmarkHeldMemory(b, "parked", 0, func(b *testing.B, addr string, n int) (release func()) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				resp, err := client.Get("http://" + addr)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		return func() {
			wg.Wait()
			client.CloseIdleConnections()
		}
	})
}

// BenchmarkWaitingMemory is BenchmarkParkedMemory with clients that are
// bare connections (a request written, no goroutine, no buffers), so that
// the figures are the server's: its heap and stacks per waiting request,
// and its goroutines. Run it with -benchtime=1x.
func BenchmarkWaitingMemory(b *testing.B) {
	// The settling time is for net/http's goroutines of detached requests
	// to exit.
	benchmarkHeldMemory(b, "waiting", 100*time.Millisecond, func(b *testing.B, addr string, n int) (release func()) {
		conns := make([]net.Conn, 0, n)
		for range n {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
			conns = append(conns, conn)
		}
		return func() {
			for _, conn := range conns {
				conn.Close()
			}
		}
	})
}

// benchmarkHeldMemory runs the memory benchmarks: for each implementation,
// served on loopback, send starts 5,000 requests to addr and returns what
// releases its clients once they are answered; when all wait, and settle
// has passed, the memory and goroutines they added are reported per
// request, in units named after held.
func benchmarkHeldMemory(b *testing.B, held string, settle time.Duration, send func(b *testing.B, addr string, n int) (release func())) {
	const n = 5000
	for _, impl := range implementations() {
		b.Run(impl.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s := impl.new()
				ts, stop := impl.serve(s)
				before := inUse()
				release := send(b, ts.Listener.Addr().String(), n)
				impl.waitHeld(s, n)
				time.Sleep(settle)
				after := inUse()
				heap, stack := int64(after.heap)-int64(before.heap), int64(after.stack)-int64(before.stack)
				b.ReportMetric(float64(heap)/n, "heapB/"+held)
				b.ReportMetric(float64(stack)/n, "stackB/"+held)
				b.ReportMetric(float64(heap+stack)/n, "B/"+held)
				b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/"+held)
				s.broadcast("bye")
				release()
				stop()
				b.StartTimer()
			}
		})
	}
}

type memory struct {
	heap, stack uint64
	goroutines  int
}

func inUse() memory {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// BenchmarkWorkers chooses the default pool size: round trips of handlers
// that compute for ~20µs or block for 1 ms (a database read), 512 clients
// at once, at several pool sizes per CPU.
func BenchmarkWorkers(b *testing.B) {
	work := map[string]func(){
		"cpu20us": func() {
			for start := time.Now(); time.Since(start) < 20*time.Microsecond; {
			}
		},
		"io1ms": func() { time.Sleep(time.Millisecond) },
	}
	for _, kind := range []string{"cpu20us", "io1ms"} {
		for _, perCPU := range []int{1, 8, 64, 256} {
			b.Run(kind+"/workers="+strconv.Itoa(perCPU)+"xCPU", func(b *testing.B) {
				d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					c := continuation.FromRequest(r)
					work[kind]()
					if c.IsInitial() { // suspend and resume at once: two dispatches
						c.Suspend()
						c.Resume()
					}
				}), continuation.WithWorkers(perCPU*runtime.GOMAXPROCS(0)), continuation.WithQueueSize(1<<20))
				req := httptest.NewRequest(http.MethodGet, "/", nil)
				b.SetParallelism(512 / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					w := &discardWriter{h: http.Header{}}
					for pb.Next() {
						d.ServeHTTP(w, req)
					}
				})
			})
		}
	}
}
