package proxytest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// The whole site works through the proxy, over HTTP/2: the page and its
// files, joining (with a session cookie marked Secure, because the proxy
// says the client came over HTTPS), and the hub's three transports, a
// WebSocket, an event stream and a long-poll, which all get a message
// published; plain HTTP is redirected to HTTPS, and a publish from
// another origin is refused (which needs the proxy to pass the client's
// Host on, port included).
func TestSite(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		s, a, b := startChat(t, p)
		c := s.client("", true)

		resp, err := s.httpClient("", false).Get(s.plain + "/rooms/lobby/members")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(loc, "https://127.0.0.1") || !strings.HasSuffix(loc, "/rooms/lobby/members") {
			t.Errorf("plain HTTP: %s, Location %q; want 301 to the same path over HTTPS", resp.Status, loc)
		}

		for _, path := range []string{"/", "/app.js", "/style.css", "/hub/client.js"} {
			resp, err := c.hc.Get(s.url + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || len(body) == 0 {
				t.Errorf("GET %s: %s over %s, %d bytes; want 200 over HTTP/2", path, resp.Status, resp.Proto, len(body))
			}
			if resp.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("GET %s: the chat's Content-Security-Policy did not come through", path)
			}
		}

		resp, err = c.hc.PostForm(s.url+"/rooms/lobby/join", url.Values{"nick": {"alice"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Set-Cookie"), "; Secure") {
			t.Errorf("join: %s, Set-Cookie %q; want 200 and a Secure cookie", resp.Status, resp.Header.Get("Set-Cookie"))
		}
		cursor := c.join("lobby", "alice")

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, strings.Replace(s.url, "https://", "wss://", 1)+"/hub/",
			&websocket.DialOptions{HTTPClient: s.httpClient("", false), Subprotocols: []string{"cometkit-hub.v1"}})
		if err != nil {
			t.Fatalf("WebSocket through %s: %v", p.name, err)
		}
		defer ws.CloseNow()
		if err := wsjson.Write(ctx, ws, map[string]any{"op": "subscribe", "topic": topicOf("lobby"), "cursor": cursor}); err != nil {
			t.Fatal(err)
		}
		events := c.stream("lobby", cursor)
		polled := make(chan []frame, 1)
		go func() {
			frames, _, err := c.poll(ctx, "lobby", cursor)
			if err != nil {
				t.Errorf("long-poll: %v", err)
			}
			polled <- frames
		}()
		waitSuspended(t, 2, func() int { return len(polled) }, a, b) // the stream and the poll
		if err := c.publish("lobby", "hello"); err != nil {
			t.Fatalf("publish: %v", err)
		}
		for {
			var f frame
			if err := wsjson.Read(ctx, ws, &f); err != nil {
				t.Fatalf("WebSocket: %v", err)
			}
			if got := messages([]frame{f}); len(got) > 0 {
				if got[0] != "hello" {
					t.Errorf("the WebSocket got %q, want hello", got)
				}
				break
			}
		}
		if text, _ := nextMessage(t, events); text != "hello" {
			t.Errorf("the event stream got %q, want hello", text)
		}
		if got := messages(<-polled); len(got) != 1 || got[0] != "hello" {
			t.Errorf("the long-poll got %q, want hello", got)
		}

		for origin, want := range map[string]int{s.url: http.StatusOK, "https://elsewhere.example": http.StatusForbidden} {
			body := `[{"op":"publish","topic":"room:lobby","data":"from another page"}]`
			req, _ := http.NewRequest(http.MethodPost, s.url+"/hub/?v=1", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Origin", origin)
			resp, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("publish with Origin %s: %s, want %d", origin, resp.Status, want)
			}
		}
	})
}

// A client's address reaches the chat as the proxy saw it, whatever the
// client writes in forwarding headers: the chat's limits per address hold
// for each client behind the proxy, not for the proxy as a whole, and
// cannot be dodged by making up X-Forwarded-For.
func TestClientAddressThroughProxy(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		n := startNode(t, "-join-rate", "1") // bursts of 3
		s := p.start(t, n.addr, n.addr)

		spoofer := s.client("127.0.0.2", true)
		joined := 0
		for i := range 10 {
			req, _ := http.NewRequest(http.MethodPost, s.url+"/rooms/lobby/join", strings.NewReader("nick=spoofer"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			made := fmt.Sprintf("10.1.2.%d", i)
			req.Header.Set("X-Forwarded-For", made)
			req.Header.Set("X-Real-IP", made)
			req.Header.Set("True-Client-IP", made)
			resp, err := spoofer.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				joined++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("join %d: %s", i, resp.Status)
			}
		}
		if joined > 4 {
			t.Errorf("a client making up its address joined %d times in a row; the limit allows 3 (4 if a second passed)", joined)
		}
		s.client("127.0.0.3", true).join("lobby", "other") // fails the test unless 200
	})
}

// The configurations set the forwarding headers, rather than pass on
// what the client wrote, and pass the client's Host on. Here the
// upstream is a small server that records what it was sent.
func TestForwardingHeaders(t *testing.T) {
	eachProxy(t, func(t *testing.T, p proxyKind) {
		var mu sync.Mutex
		var seen http.Header
		var host string
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				return // haproxy's health checks
			}
			mu.Lock()
			defer mu.Unlock()
			seen, host = r.Header.Clone(), r.Host
		}))
		t.Cleanup(upstream.Close)
		addr := strings.TrimPrefix(upstream.URL, "http://")
		s := p.start(t, addr, addr)

		req, _ := http.NewRequest(http.MethodGet, s.url+"/rooms/lobby/members", nil)
		req.Header.Set("X-Forwarded-For", "10.9.9.9")
		req.Header.Set("X-Forwarded-Proto", "http")
		resp, err := s.httpClient("127.0.0.2", true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		if xff := seen.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.2" {
			t.Errorf("upstream got X-Forwarded-For %q, want exactly the client's address, 127.0.0.2", xff)
		}
		if proto := seen.Values("X-Forwarded-Proto"); len(proto) != 1 || proto[0] != "https" {
			t.Errorf("upstream got X-Forwarded-Proto %q, want https", proto)
		}
		if want := strings.TrimPrefix(s.url, "https://"); host != want {
			t.Errorf("upstream got Host %q, want the client's, %q", host, want)
		}
	})
}
