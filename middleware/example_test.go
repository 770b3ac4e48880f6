package middleware_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/middleware"
)

// A long-poll route behind the middleware, and the wiring that answers it
// when the server stops: Drain, registered with the server, expires the
// suspended poll, whose handler answers at once (with the route's URL
// parameters as in its first dispatch), and the server's Shutdown returns
// as soon as it has.
func Example() {
	mw := middleware.New()
	suspended := make(chan struct{})
	r := chi.NewRouter()
	r.Use(mw.Handler)
	r.Get("/rooms/{room}/poll", func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsExpired() { // the wait timed out, or the server is stopping
			fmt.Fprintf(w, "no news in %s", chi.URLParam(r, "room"))
			return
		}
		if err := c.Suspend(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		close(suspended)
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: r}
	srv.RegisterOnShutdown(mw.Drain)
	go srv.Serve(ln)

	answer := make(chan string)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/rooms/lobby/poll")
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		answer <- resp.Status + " " + string(body)
	}()
	<-suspended

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	if err := mw.Shutdown(ctx); err != nil { // what waits detached from net/http, when served so
		fmt.Println(err)
	}
	fmt.Println(<-answer)
	// Output: 200 OK no news in lobby
}
