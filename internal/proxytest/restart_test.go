package proxytest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A publisher posts numbered messages ("m1", "m2", …) to a room.
type publisher struct {
	c    *client
	room string
	sent int
}

// publish posts the next n messages, each until it is accepted: while
// every node restarts, the proxy has no answer to give.
func (p *publisher) publish(t *testing.T, n int) {
	t.Helper()
	for range n {
		p.sent++
		text := fmt.Sprint("m", p.sent)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			err := p.c.post(p.room, text)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("post %s: %v", text, err)
			}
		}
	}
}

// want returns the texts the publisher has sent, in order.
func (p *publisher) want() []string {
	out := make([]string, p.sent)
	for i := range out {
		out[i] = fmt.Sprint("m", i+1)
	}
	return out
}

// A standard EventSource reconnects through the proxy after every node
// restarts, and, the nodes sharing Redis, gets every message once and in
// order. Without the configuration's rule that closes a stream's
// connection when no node answers, the client gets the proxy's 502 or 503
// and gives up for good, as the standard says it must.
func TestEventSourceRecoversFromRestart(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		t.Run("documented", func(t *testing.T) {
			got := restartUnderEventSource(t, p)
			if got.State == 2 {
				t.Fatalf("the EventSource gave up: %+v", got)
			}
		})
		// The configuration without its rule for streams when no node
		// answers.
		without := map[string][]string{
			"nginx":   {"error_page 502 504 = @unavailable;", ""},
			"haproxy": {"errorfile 502 /dev/null", "", "errorfile 503 /dev/null", "", "errorfile 504 /dev/null", ""},
		}[p.name]
		t.Run("without the rule", func(t *testing.T) {
			got := restartUnderEventSource(t, p.with(without...))
			if got.State != 2 || got.Code < 500 {
				t.Fatalf("the EventSource saw %+v; want it given up (state 2) on the proxy's 5xx", got)
			}
		})
	})
}

// restartUnderEventSource runs two nodes behind the proxy, opens a
// standard EventSource on a room, publishes, stops both nodes, and returns
// the EventSource's first report of a failed reconnection. If it will
// reconnect, it starts the nodes again, publishes more, and checks that
// the EventSource gets every message once, in order, with no "missed".
func restartUnderEventSource(t *testing.T, p proxyKind) report {
	s, a, b := startChat(t, p, "-post-rate", "100")
	pub := &publisher{c: s.client("", true), room: "restart"}
	cursor := pub.c.join(pub.room, "publisher")
	reports := openEventSource(t, s, "/rooms/restart/subscribe?transport=sse&since="+cursor)

	var got []string
	var missed int
	// await reads reports until until says stop, or fails the test after
	// a generous wait.
	await := func(what string, until func(report) bool) report {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case r, ok := <-reports:
				if !ok {
					t.Fatalf("eventsource.mjs exited while waiting for %s", what)
				}
				if r.Kind == "event" && r.Type == "message" {
					var ev chatEvent
					json.Unmarshal([]byte(r.Data), &ev)
					got = append(got, ev.Text)
				}
				if r.Kind == "event" && r.Type == "missed" {
					missed++
				}
				if until(r) {
					return r
				}
			case <-timeout:
				t.Fatalf("no %s within 30 s; messages so far %q", what, got)
			}
		}
	}
	all := func(r report) bool { return len(got) == pub.sent }

	await("open", func(r report) bool { return r.Kind == "open" })
	pub.publish(t, 5)
	await("the first messages", all)

	a.stop()
	b.stop()
	// The stream ended when its node drained; what counts is the next
	// attempt, made while no node is up.
	failed := await("a failed reconnection", func(r report) bool { return r.Kind == "error" && r.Message != "" })
	// Browsers speak HTTP/2 to the proxy: there too a stream gets no
	// answer (the proxy resets it) where EventSource would give up on one.
	// (Go's client tries a reset stream again, until its deadline.)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	resp, err := pub.c.openStream(ctx, pub.room, cursor, "")
	cancel()
	if err == nil {
		t.Fatalf("a stream over HTTP/2 with no node up: %s", resp.Status)
	}
	if answered := resp != nil; answered != (failed.State == 2) {
		t.Errorf("a stream over HTTP/2 with no node up: %v; the EventSource saw %+v", err, failed)
	}
	// Anything but a stream still gets the proxy's error page.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/", nil)
	if resp, err := pub.c.hc.Do(req); err != nil || resp.StatusCode < 500 {
		t.Errorf("the page with no node up: %v, %v; want the proxy's error page", resp, err)
	} else {
		resp.Body.Close()
	}
	cancel()
	if failed.State == 2 {
		return failed
	}
	a.start()
	b.start()
	pub.publish(t, 10)
	await("every message", all)
	if strings.Join(got, " ") != strings.Join(pub.want(), " ") || missed > 0 {
		t.Errorf("the EventSource got %q and %d missed events; want %q and none", got, missed, pub.want())
	}
	return failed
}

// A rolling restart of the two nodes, each down for a second while the
// other is up, and the second within seconds of the first (well inside
// nginx's fail_timeout), gives no client an error: the page, posts,
// long-polls and event streams all go on through the node that is up,
// and every poller gets every message once, in order.
func TestRollingRestart(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		s, a, b := startChat(t, p, "-timeout", "2s", "-post-rate", "100")
		pub := &publisher{c: s.client("", true), room: "rolling"}
		cursor := pub.c.join(pub.room, "publisher")

		// A request that reaches a node as it begins to drain is refused
		// with 503 and Retry-After (the chat's own answer, which its page
		// waits on); anything else is a failure.
		var mu sync.Mutex
		failures := map[string]int{}
		refusals := 0
		fail := func(what string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if refused(err) && what != "event stream" { // EventSource would give up on it
				refusals++
			} else {
				failures[what+": "+errorKind(err)]++
			}
		}
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup

		const pollers = 4
		polled := make([][]string, pollers)
		next := make([]string, pollers) // each poller's cursor
		for i := range pollers {
			c := s.client("", i%2 == 0) // HTTP/2 and HTTP/1.1
			next[i] = cursor
			wg.Go(func() {
				for ctx.Err() == nil {
					p, err := c.poll(ctx, pub.room, next[i])
					if ctx.Err() != nil {
						return
					}
					if err != nil {
						fail("long-poll", err)
						time.Sleep(100 * time.Millisecond)
						continue
					}
					polled[i] = append(polled[i], messages(p.Events)...)
					next[i] = p.Next
				}
			})
		}
		for i := range 2 {
			c := s.client("", i == 0)
			wg.Go(func() {
				for ctx.Err() == nil {
					for _, path := range []string{"/", "/app.js", "/rooms/rolling/members"} {
						resp, err := c.hc.Get(s.url + path)
						if ctx.Err() != nil {
							return
						}
						if err == nil {
							err = check(resp, http.StatusOK)
							resp.Body.Close()
						}
						if err != nil {
							fail("GET "+path, err)
						}
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		const streams = 2
		streamed := make([][]string, streams)
		for i := range streams {
			c := s.client("", i == 0)
			wg.Go(func() {
				lastID := ""
				for ctx.Err() == nil {
					resp, err := c.openStream(ctx, pub.room, cursor, lastID)
					if ctx.Err() != nil {
						return
					}
					if err != nil {
						fail("event stream", err)
						time.Sleep(100 * time.Millisecond)
						continue
					}
					events := make(chan sseEvent, 64)
					go readEvents(resp.Body, events)
					for ev := range events { // until the node drains, and ends it
						var ce chatEvent
						if ev.typ == "message" && json.Unmarshal([]byte(ev.data), &ce) == nil {
							streamed[i] = append(streamed[i], ce.Text)
						}
						if ev.id != "" {
							lastID = ev.id
						}
					}
					resp.Body.Close()
				}
			})
		}
		var accepted []string
		posted := make(chan struct{})
		go func() {
			defer close(posted)
			for i := 1; ctx.Err() == nil; i++ {
				text := fmt.Sprint("m", i)
				err := pub.c.post(pub.room, text)
				for refused(err) && ctx.Err() == nil { // not acted on: again
					fail("post", err)
					err = pub.c.post(pub.room, text)
				}
				if err == nil {
					accepted = append(accepted, text)
				} else if ctx.Err() == nil {
					fail("post", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()

		time.Sleep(500 * time.Millisecond)
		for _, n := range []*node{a, b, a} {
			n.stop()
			time.Sleep(time.Second) // long enough for haproxy's health checks to see it
			n.start()
		}
		time.Sleep(500 * time.Millisecond)
		stop()
		<-posted
		wg.Wait()

		if len(failures) > 0 {
			t.Errorf("through %s, during a rolling restart: %v", p.name, failures)
		}
		// Each poller goes on to the end of the messages.
		c := s.client("", true)
		want := strings.Join(accepted, " ")
		for i := range pollers {
			for len(polled[i]) < len(accepted) {
				pl, err := c.poll(context.Background(), pub.room, next[i])
				if err != nil {
					t.Fatal(err)
				}
				if len(pl.Events) == 0 {
					break // the poll timed out: there is no more
				}
				polled[i] = append(polled[i], messages(pl.Events)...)
				next[i] = pl.Next
			}
			if got := strings.Join(polled[i], " "); got != want {
				t.Errorf("poller %d got %q; want each accepted post once, in order: %q", i, got, want)
			}
		}
		// The streams were cut off at some point; up to there they have had
		// every message once, in order.
		for i := range streams {
			if got := streamed[i]; len(got) > len(accepted) || !slices.Equal(got, accepted[:len(got)]) {
				t.Errorf("event stream %d got %q; want each accepted post once, in order: %q", i, got, accepted)
			}
		}
		t.Logf("%d messages posted through a rolling restart; %d requests refused with 503 and Retry-After", len(accepted), refusals)
	})
}

// A node that crashes (SIGKILL) under long-polls waiting on it gives
// their clients no error: the proxy sends each poll, a GET, to the other
// node, where it waits on; a message posted then reaches every client.
func TestNodeCrash(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		s, a, b := startChat(t, p)
		pub := s.client("", true)
		cursor := pub.join("crash", "publisher")
		const pollers = 20
		errs := make(chan error, pollers)
		for i := range pollers {
			c := s.client("", i%2 == 0)
			go func() {
				p, err := c.poll(context.Background(), "crash", cursor)
				if got := messages(p.Events); err == nil && (len(got) != 1 || got[0] != "after") {
					err = fmt.Errorf("got %q, want after", got)
				}
				errs <- err
			}()
		}
		waitSuspended(t, pollers, func() int { return len(errs) }, a, b)
		a.proc.cmd.Process.Kill()
		<-a.proc.done
		waitSuspended(t, pollers, func() int { return len(errs) }, b)
		if err := pub.post("crash", "after"); err != nil {
			t.Fatalf("post after the crash: %v", err)
		}
		for range pollers {
			if err := <-errs; err != nil {
				t.Errorf("a long-poll through %s when its node crashed: %v", p.name, errorKind(err))
			}
		}
	})
}
