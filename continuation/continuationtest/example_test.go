package continuationtest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

// A long-poll handler tested in process: the request suspends, an event
// resumes it, and the recorder holds the answer. A second request is
// abandoned by its client while it waits.
func Example() {
	waiting := make(chan *continuation.Continuation, 1)
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
		waiting <- c
	}))

	call := continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/poll", nil))
	c := <-waiting // suspended
	c.SetAttribute("msg", "hello")
	c.Resume()
	fmt.Println(call.Wait().Body.String())

	gone := continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/poll", nil))
	c = <-waiting
	gone.Disconnect()
	<-c.Done() // the request ended without another dispatch
	fmt.Println(c.Resume())
	// Output:
	// hello
	// continuation: request completed
}
