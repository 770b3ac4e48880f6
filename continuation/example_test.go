package continuation_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cometkit/cometkit/continuation"
)

// A long-poll: the first dispatch suspends and registers the request; a
// publish resumes every waiter with the message as an attribute; the
// redispatch writes it.
func Example() {
	var (
		mu      sync.Mutex
		waiting []continuation.Handle
	)
	poll := func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if msg, ok := c.Attribute("msg").(string); ok {
			io.WriteString(w, msg)
			return
		}
		if c.IsExpired() {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := c.Suspend(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		waiting = append(waiting, c.Handle())
		mu.Unlock()
	}
	publish := func(msg string) {
		mu.Lock()
		list := waiting
		waiting = nil
		mu.Unlock()
		for _, h := range list {
			h.Continuation().SetAttribute("msg", msg)
			h.Resume() // fails harmlessly if the waiter already timed out
		}
	}

	d := continuation.NewDispatcher(http.HandlerFunc(poll))
	srv := httptest.NewServer(d)
	defer srv.Close()
	defer d.Shutdown(context.Background())

	answer := make(chan string)
	go func() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	for d.Suspended() == 0 {
		time.Sleep(time.Millisecond) // until the poll waits
	}
	publish("hello")
	fmt.Println(<-answer)
	// Output: hello
}

// A timeout answers a waiting request with whatever the expiry dispatch
// writes; listeners see the timeout first.
func ExampleContinuation_SetTimeout() {
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsExpired() {
			io.WriteString(w, "no news")
			return
		}
		c.SetTimeout(10 * time.Millisecond)
		c.AddListener(continuation.ListenerFuncs{
			Timeout: func(*continuation.Continuation) { fmt.Println("timed out") },
		})
		c.Suspend()
	}))
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	fmt.Println(rec.Body.String())
	// Output:
	// timed out
	// no news
}

// A stream: each redispatch writes an event, flushes it and suspends
// again, on one response.
func ExampleContinuation_Suspend_stream() {
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		n, _ := c.Attribute("n").(int)
		if !c.IsInitial() {
			fmt.Fprintf(w, "event %d\n", n)
			http.NewResponseController(w).Flush()
			if n == 3 {
				return // the stream ends
			}
		}
		c.SetAttribute("n", n+1)
		c.Suspend()
		c.Resume() // an event is ready at once here; normally another goroutine resumes
	}))
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	fmt.Print(rec.Body.String())
	// Output:
	// event 1
	// event 2
	// event 3
}

// Shutting down: Drain, registered with the server, expires every waiting
// request (so its handler answers) when the server's Shutdown begins, and
// the server's Shutdown then returns once they have answered.
func ExampleDispatcher_Drain() {
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsExpired() {
			io.WriteString(w, "server going away, reconnect")
			return
		}
		c.SetTimeout(0) // wait forever
		c.Suspend()
	}))
	srv := httptest.NewUnstartedServer(d)
	srv.Config.RegisterOnShutdown(d.Drain)
	srv.Start()
	defer srv.Close()

	answer := make(chan string)
	go func() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	for d.Suspended() == 0 {
		time.Sleep(time.Millisecond) // until the request waits
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println(<-answer)
	// Output: server going away, reconnect
}

// Serving with detaching: each poll waits detached from net/http (on
// Linux: with no goroutine), and the client's next poll comes on the
// connection the answer handed back.
func ExampleServe() {
	var waiting atomic.Pointer[continuation.Continuation]
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if msg, ok := c.Attribute("msg").(string); ok {
			io.WriteString(w, msg)
			return
		}
		if err := c.Suspend(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		waiting.Store(c)
	}))
	srv := &http.Server{Handler: d}
	srv.RegisterOnShutdown(d.Drain)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go continuation.Serve(srv, ln)

	for _, msg := range []string{"one", "two"} {
		answer := make(chan string)
		go func() {
			resp, err := http.Get("http://" + ln.Addr().String())
			if err != nil {
				answer <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answer <- string(b)
		}()
		for waiting.Load() == nil {
			time.Sleep(time.Millisecond) // until the poll waits
		}
		c := waiting.Swap(nil)
		c.SetAttribute("msg", msg)
		c.Resume()
		fmt.Println(<-answer)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	d.Shutdown(ctx) // what srv.Shutdown does not see: the detached requests
	// Output:
	// one
	// two
}
