package servlet_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/servlet"
)

// news is a long-poll servlet: a GET waits for the next headline, which a
// POST delivers.
type news struct {
	waiting chan *continuation.Continuation
}

func (n *news) DoGet(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	switch {
	case c.IsInitial():
		if err := c.Suspend(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		n.waiting <- c
	case c.IsExpired():
		w.WriteHeader(http.StatusNoContent) // no news in time, or the server is stopping
	default:
		io.WriteString(w, c.Attribute("headline").(string))
	}
}

func (n *news) DoPost(w http.ResponseWriter, r *http.Request) {
	headline, _ := io.ReadAll(r.Body)
	c := <-n.waiting
	c.SetAttribute("headline", string(headline))
	c.Resume()
}

func Example() {
	c := servlet.NewContainer()
	c.Handle("/news", &news{waiting: make(chan *continuation.Continuation, 1)})
	if err := c.Start(); err != nil {
		panic(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	defer c.Shutdown(context.Background())

	poll := make(chan string)
	go func() {
		resp, err := http.Get(srv.URL + "/news")
		if err != nil {
			poll <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		poll <- resp.Status + ": " + string(body)
	}()
	resp, err := http.Post(srv.URL+"/news", "text/plain", strings.NewReader("Comet is back"))
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(<-poll)
	// Output: 200 OK: Comet is back
}

// The wiring for a graceful stop: Drain, registered with the server,
// expires the suspended long-polls so that they answer at once, and the
// server's Shutdown returns when they have; the Container's Shutdown then
// runs each servlet's Destroy.
func ExampleContainer_Drain() {
	n := &news{waiting: make(chan *continuation.Continuation, 1)}
	c := servlet.NewContainer()
	c.Handle("/news", n)
	if err := c.Start(); err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: c}
	srv.RegisterOnShutdown(c.Drain)
	go srv.Serve(ln)

	poll := make(chan string)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/news")
		if err != nil {
			poll <- err.Error()
			return
		}
		resp.Body.Close()
		poll <- resp.Status
	}()
	<-n.waiting // the long-poll is suspended

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	fmt.Println(<-poll)
	if err := c.Shutdown(ctx); err != nil {
		fmt.Println(err)
	}
	// Output: 204 No Content
}
