package proxytest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// A publisher publishes numbered messages ("m1", "m2", …) in a room, as
// a page does: when a restarted node has forgotten its nick, it joins
// again.
type publisher struct {
	c          *client
	room, nick string
	sent       []string // accepted, in order
	rejoined   int
}

func newPublisher(s *site, room string) (*publisher, string) {
	p := &publisher{c: s.client("", true), room: room, nick: "publisher"}
	return p, p.c.join(room, p.nick)
}

// try publishes text once; after a refusal of the nick it joins again
// (and the next try may succeed).
func (p *publisher) try(text string) error {
	err := p.c.publish(p.room, text)
	if err == nil {
		p.sent = append(p.sent, text)
	}
	if forbidden(err) {
		p.rejoined++
		p.c.tryJoin(p.room, p.nick)
	}
	return err
}

// forbidden reports whether err is the hub's refusal of a publish: the
// chat's, for a nick it does not know as present.
func forbidden(err error) bool {
	he, ok := errors.AsType[*hubError](err)
	return ok && he.Code == "forbidden"
}

// publish publishes the next n messages, each until it is accepted: while
// every node restarts, the proxy has no answer to give.
func (p *publisher) publish(t *testing.T, n int) {
	t.Helper()
	for range n {
		text := fmt.Sprint("m", len(p.sent)+1)
		for deadline := time.Now().Add(20 * time.Second); p.try(text) != nil; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("publish %s: %v", text, p.try(text))
			}
		}
	}
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
	pub, cursor := newPublisher(s, "restart")
	reports := openEventSource(t, s, streamPath(pub.room, cursor))

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
				if text, ok := (sseEvent{typ: r.Type, data: r.Data}).message(); r.Kind == "event" && ok {
					got = append(got, text)
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
	all := func(r report) bool { return len(got) == len(pub.sent) }

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
	if !slices.Equal(got, pub.sent) || missed > 0 {
		t.Errorf("the EventSource got %q and %d missed events; want %q and none", got, missed, pub.sent)
	}
	return failed
}

// A rolling restart of the two nodes, each down for a second while the
// other is up, and the second within seconds of the first (well inside
// nginx's fail_timeout), gives no client an error from the proxy: the
// page, publishes, long-polls, event streams and WebSockets all go on
// through the node that is up, and every poller gets every message once,
// in order.
func TestRollingRestart(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		s, a, b := startChat(t, p, "-timeout", "2s", "-post-rate", "100")
		pub, cursor := newPublisher(s, "rolling")

		// A request that reaches a node as it begins to drain may be
		// refused with 503 and Retry-After, or the hub's "unavailable", for
		// the client to try again. A POST (a long-poll, a publish) that the
		// proxy sends on a kept-alive connection just as the draining node
		// closes it gets the proxy's 502 or a closed connection: the node
		// never read it, but no proxy may send a POST again, and its client
		// does. Anything else is a failure.
		var mu sync.Mutex
		failures := map[string]int{}
		refusals, dropped := 0, 0
		fail := func(what string, err error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case refused(err) && what != "event stream": // EventSource would give up on a 503
				refusals++
			case droppedPost(err) && (what == "long-poll" || what == "publish"):
				dropped++
			default:
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
					frames, cursor, err := c.poll(ctx, pub.room, next[i])
					if ctx.Err() != nil {
						return
					}
					if err != nil {
						fail("long-poll", err)
						time.Sleep(100 * time.Millisecond)
						continue
					}
					polled[i] = append(polled[i], messages(frames)...)
					next[i] = cursor
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
						if text, ok := ev.message(); ok {
							streamed[i] = append(streamed[i], text)
						}
						if ev.id != "" {
							lastID = ev.id
						}
					}
					resp.Body.Close()
				}
			})
		}
		var sockets []string
		wg.Go(func() {
			from := cursor
			for ctx.Err() == nil {
				err := followOverWebSocket(ctx, s, pub.room, &from, &sockets)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					fail("WebSocket", err)
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
		published := make(chan struct{})
		go func() {
			defer close(published)
			for i := 1; ctx.Err() == nil; i++ {
				text := fmt.Sprint("m", i)
				err := pub.try(text)
				for tries := 1; err != nil && tries < 5 && ctx.Err() == nil; tries++ {
					if refused(err) || droppedPost(err) {
						fail("publish", err) // counted, and tried again
					} else if !forbidden(err) { // forbidden: it joined again
						break
					}
					err = pub.try(text) // it was not published: again
				}
				if err != nil && ctx.Err() == nil {
					fail("publish", err)
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
		<-published
		wg.Wait()

		if len(failures) > 0 {
			t.Errorf("through %s, during a rolling restart: %v", p.name, failures)
		}
		// Each poller goes on to the end of the messages.
		c := s.client("", true)
		for i := range pollers {
			for len(polled[i]) < len(pub.sent) {
				frames, cursor, err := c.poll(context.Background(), pub.room, next[i])
				if err != nil {
					t.Fatal(err)
				}
				if len(frames) == 0 {
					break // the poll timed out: there is no more
				}
				polled[i] = append(polled[i], messages(frames)...)
				next[i] = cursor
			}
			if !slices.Equal(polled[i], pub.sent) {
				t.Errorf("poller %d got %q; want each accepted publish once, in order: %q", i, polled[i], pub.sent)
			}
		}
		// The streams and the WebSocket were cut off at some point; up to
		// there they have had every message once, in order.
		for i, got := range append(streamed, sockets) {
			if len(got) > len(pub.sent) || !slices.Equal(got, pub.sent[:len(got)]) {
				t.Errorf("stream %d got %q; want each accepted publish once, in order: %q", i, got, pub.sent)
			}
		}
		t.Logf("%d messages published through a rolling restart; %d requests refused for a while, %d POSTs dropped, %d times the nick joined again",
			len(pub.sent), refusals, dropped, pub.rejoined)
	})
}

// droppedPost reports whether err is what a POST gets from the proxy when
// its node closed the connection without an answer: the proxy's 502, or
// the connection closed.
func droppedPost(err error) bool {
	if se, ok := errors.AsType[*statusError](err); ok {
		return se.code == http.StatusBadGateway
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// followOverWebSocket follows room over one WebSocket through the site
// from *cursor, appending the messages to *got and keeping *cursor, until
// the connection ends: nil when the server closed it going away (1001, a
// node draining) or ctx ended.
func followOverWebSocket(ctx context.Context, s *site, room string, cursor *string, got *[]string) error {
	ws, resp, err := websocket.Dial(ctx, strings.Replace(s.url, "https://", "wss://", 1)+"/hub/",
		&websocket.DialOptions{HTTPClient: s.httpClient("", false), Subprotocols: []string{"cometkit-hub.v1"}})
	if err != nil {
		if resp != nil {
			return check(resp, http.StatusSwitchingProtocols)
		}
		return err
	}
	defer ws.CloseNow()
	if err := wsjson.Write(ctx, ws, map[string]any{"op": "subscribe", "topic": topicOf(room), "cursor": *cursor}); err != nil {
		return err
	}
	for {
		var f frame
		if err := wsjson.Read(ctx, ws, &f); err != nil {
			if websocket.CloseStatus(err) == websocket.StatusGoingAway || ctx.Err() != nil {
				return nil
			}
			return err
		}
		*got = append(*got, messages([]frame{f})...)
		if f.Topic == topicOf(room) && f.Cursor != "" {
			*cursor = f.Cursor
		}
	}
}

// A node that crashes (SIGKILL) under clients waiting on it loses them
// nothing: each client's next request goes to the other node, from its
// cursor, and a message published then reaches every client once. The
// long-polls waiting on the crashed node fail (with the proxy's 502: a
// long-poll is a POST, which may carry a publish, and no proxy retries
// one that reached a node), and poll again, as the hub's client does;
// the event streams on it end, and reconnect.
func TestNodeCrash(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		s, a, b := startChat(t, p)
		pub, cursor := newPublisher(s, "crash")
		const clients = 20 // half long-polls, half event streams
		got := make(chan []string, clients)
		var mu sync.Mutex
		failures := map[string]int{}
		failed := func(err error) {
			mu.Lock()
			failures[errorKind(err)]++
			mu.Unlock()
			time.Sleep(50 * time.Millisecond) // then again, as a client backs off
		}
		for i := range clients {
			c := s.client("", i%4 < 2)
			if i%2 == 0 {
				go func() {
					for {
						frames, _, err := c.poll(context.Background(), pub.room, cursor)
						if err == nil {
							got <- messages(frames)
							return
						}
						failed(err)
					}
				}()
				continue
			}
			go func() {
				lastID := ""
				for {
					resp, err := c.openStream(context.Background(), pub.room, cursor, lastID)
					if err != nil {
						failed(err)
						continue
					}
					events := make(chan sseEvent, 64)
					go readEvents(resp.Body, events)
					for ev := range events {
						if ev.id != "" {
							lastID = ev.id
						}
						if text, ok := ev.message(); ok {
							resp.Body.Close()
							got <- []string{text}
							return
						}
					}
					resp.Body.Close()
				}
			}()
		}
		waitSuspended(t, clients, func() int { return len(got) }, a, b)
		a.proc.cmd.Process.Kill()
		<-a.proc.done
		waitSuspended(t, clients, func() int { return len(got) }, b)
		pub.publish(t, 1)
		for range clients {
			if texts := <-got; !slices.Equal(texts, pub.sent) {
				t.Errorf("a client waiting through %s when a node crashed got %q, want %q", p.name, texts, pub.sent)
			}
		}
		for kind := range failures {
			if !strings.Contains(kind, ": 502 ") && !strings.Contains(kind, "EOF") {
				t.Errorf("through %s, when a node crashed: %s", p.name, kind)
			}
		}
		t.Logf("clients' requests that failed when the node crashed: %v", failures)
	})
}
