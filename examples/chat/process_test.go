package main

// The chat built and run as its own process, over real sockets: what
// clients and operators see on the wire.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/internal/testproc"
)

// freeAddr returns a loopback address nothing listens on, for a server's
// flag.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// stop sends SIGTERM and waits for a clean exit.
func stop(t *testing.T, srv *testproc.Server) {
	require.NoError(t, srv.Cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, srv.Wait())
}

// Issue 10's check over the wire: the chat restarts while a client holds
// a cursor; every message published after the restart reaches the client,
// by long-poll and by event stream, and the client is told its cursor was
// from another epoch ("missed"). With the session key in
// $CHAT_SESSION_SECRET, the client's session outlives the restart: the
// new process knows it (no 401), though its nick is no longer present
// (410) until its page joins again.
func TestRestartOverTheWire(t *testing.T) {
	t.Setenv(sessionKeyEnv, strings.Repeat("restart-test-key-", 3))
	first := testproc.Start(t, ".")
	alice := wirePerson(t, first.Addr)
	j := alice.join("edge", "alice")
	require.Equal(t, "published", alice.say("edge", "before"))
	seen := alice.poll("edge", j.Cursor)
	require.Equal(t, []string{"message:alice:before"}, texts(seen.Events))
	stop(t, first)

	second := testproc.Start(t, ".")
	bob := wirePerson(t, second.Addr)
	bob.join("edge", "bob")
	for _, m := range []string{"one", "two", "three"} {
		require.Equal(t, "published", bob.say("edge", m))
	}
	alice = alice.at("http://" + second.Addr)
	got := alice.poll("edge", seen.Next)
	assert.False(t, got.Complete, "a cursor from before the restart")
	assert.Equal(t, []string{"join:bob:", "message:bob:one", "message:bob:two", "message:bob:three"}, texts(got.Events))
	assert.Equal(t, http.StatusGone, alice.here("edge"), "the session outlived the restart; the presence did not")
	assert.Equal(t, "forbidden", alice.say("edge", "not present"))
	alice.join("edge", "alice")
	assert.Equal(t, "published", alice.say("edge", "still alice"))

	r := alice.stream("edge", "", "Last-Event-ID", seen.Next)
	_, typ, _ := r.next()
	assert.Equal(t, "subscribed", typ)
	_, typ, _ = r.next()
	assert.Equal(t, "missed", typ)
	var evs []string
	for range 6 {
		id, ev := r.nextEvent()
		evs = append(evs, ev.Type+":"+ev.Nick+":"+ev.Text)
		_, err := clientmgr.ParseCursor(id)
		assert.NoError(t, err, "the id is the cursor")
	}
	assert.Equal(t, []string{"join:bob:", "message:bob:one", "message:bob:two", "message:bob:three", "join:alice:", "message:alice:still alice"}, evs)
}

// Issue 11.11: a flood of 3,000 joins and leaves while a client polls
// every half second, with a short history. Every answer either holds
// every event since the client's cursor, or says it may not (complete
// false): no event is lost without the client being told.
func TestJoinFloodNeverLosesEventsSilently(t *testing.T) {
	srv := testproc.Start(t, ".", "-history", "16", "-room-rate", "100000", "-join-rate", "100000", "-timeout", "1s")
	viewer := wirePerson(t, srv.Addr)
	cursor := viewer.join("flood", "viewer").Cursor

	const visitors = 1500 // each joins, then leaves: 3,000 events
	var accepted atomic.Int32
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		tr := &http.Transport{MaxIdleConnsPerHost: 16}
		defer tr.CloseIdleConnections()
		send := func(client *http.Client, path string, form url.Values, want int) {
			resp, err := client.PostForm("http://"+srv.Addr+"/rooms/flood/"+path, form)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == want {
					accepted.Add(1)
				}
			}
		}
		var wg sync.WaitGroup
		next := make(chan int)
		for range 16 {
			wg.Go(func() {
				for i := range next {
					jar, _ := cookiejar.New(nil) // a session of its own
					client := &http.Client{Transport: tr, Jar: jar}
					send(client, "join", url.Values{"nick": {fmt.Sprintf("u%04d", i)}}, http.StatusOK)
					send(client, "leave", nil, http.StatusNoContent)
				}
			})
		}
		pace := time.NewTicker(time.Millisecond) // about 2,000 events a second, as in the issue
		defer pace.Stop()
		for i := range visitors {
			<-pace.C
			next <- i
		}
		close(next)
		wg.Wait()
	}()

	var received, published, incomplete int
	for done := false; !done; {
		select {
		case <-flooded:
			done = true // one more poll, for the rest
		case <-time.After(500 * time.Millisecond):
		}
		a := viewer.poll("flood", cursor)
		from, err1 := clientmgr.ParseCursor(cursor)
		to, err2 := clientmgr.ParseCursor(a.Next)
		require.NoError(t, err1)
		require.NoError(t, err2)
		require.Equal(t, from.Epoch, to.Epoch, "one epoch")
		since := int(to.Seq - from.Seq) // events published after the cursor
		if a.Complete {
			require.Len(t, a.Events, since, "a complete answer holds every event after the cursor")
		} else {
			incomplete++
			require.Less(t, len(a.Events), since)
		}
		received += len(a.Events)
		published += since
		cursor = a.Next
	}
	t.Logf("%d joins and leaves accepted, %d events received, %d answers said some were missed", accepted.Load(), received, incomplete)
	assert.Equal(t, int(accepted.Load()), published)
	assert.Positive(t, incomplete, "the flood outran the history, and the client was told")
}

// Issue 11.9: rate limits are per session and per client address, and the
// client address is the peer's unless it is a trusted proxy. Rotating
// X-Forwarded-For, X-Real-IP, True-Client-IP and the nick gives no more
// posts or joins than not rotating them.
func TestForwardedHeadersGiveNoExtraPostsOverTheWire(t *testing.T) {
	burst := burstOf(defaults().postRate)
	spoof := func(i int) []string {
		return []string{"X-Forwarded-For", fmt.Sprintf("10.0.%d.1", i), "X-Real-IP", fmt.Sprintf("10.1.%d.1", i), "True-Client-IP", fmt.Sprintf("10.2.%d.1", i)}
	}
	count := func(codes []int, want int) int {
		n := 0
		for _, c := range codes {
			if c == want {
				n++
			}
		}
		return n
	}

	direct := testproc.Start(t, ".")
	mallory := wirePerson(t, direct.Addr)
	mallory.join("lobby", "mallory")
	var posts []string
	for i := range 20 {
		spoofed := mallory.with(spoof(i)...)
		spoofed.post("/rooms/lobby/join", url.Values{"nick": {"mallory" + strconv.Itoa(i)}})
		posts = append(posts, spoofed.say("lobby", "spam"))
	}
	posted := 0
	for _, p := range posts {
		if p == "published" {
			posted++
		}
	}
	assert.GreaterOrEqual(t, posted, burst, "%v", posts)
	assert.LessOrEqual(t, posted, burst+1, "one session, whatever its nick and headers: %v", posts)

	// Clients with no session, and made-up headers: joins (which make
	// sessions) are limited per address, the peer's.
	var joins []int
	for i := range 20 {
		joins = append(joins, wirePerson(t, direct.Addr).post("/rooms/other/join", url.Values{"nick": {"m" + strconv.Itoa(i)}}, spoof(i)...).StatusCode)
	}
	assert.LessOrEqual(t, count(joins, http.StatusOK), burstOf(defaults().joinRate)+1, "%v", joins)
	assert.Equal(t, 20-count(joins, http.StatusOK), count(joins, http.StatusTooManyRequests), "%v", joins)

	// Behind a trusted proxy: the client is the address the proxy added
	// (the last of X-Forwarded-For); what the client wrote before it, and
	// the other headers, count for nothing.
	proxied := testproc.Start(t, ".", "-trusted-proxies", "127.0.0.1")
	joins = nil
	for i := range 20 {
		h := append(spoof(i)[2:], "X-Forwarded-For", fmt.Sprintf("10.9.9.%d, 198.51.100.7", i))
		joins = append(joins, wirePerson(t, proxied.Addr).post("/rooms/lobby/join", url.Values{"nick": {"m" + strconv.Itoa(i)}}, h...).StatusCode)
	}
	assert.LessOrEqual(t, count(joins, http.StatusOK), burstOf(defaults().joinRate)+1, "%v", joins)
	for i := range 10 {
		resp := wirePerson(t, proxied.Addr).post("/rooms/lobby/join", url.Values{"nick": {"d" + strconv.Itoa(i)}},
			"X-Forwarded-For", fmt.Sprintf("198.51.100.%d", 100+i))
		assert.Equal(t, http.StatusOK, resp.StatusCode, "distinct clients behind the proxy")
	}
}

// Issue 11.9: a flood of large posts, over many rooms, with the rate
// limits lifted: the process's memory stays bounded (a room keeps
// -history-bytes), a join answer stays bounded (50 events, 64 KiB; 200 KB
// of these posts otherwise), and a "<" is stored and sent as one byte.
func TestLargePostFloodStaysBounded(t *testing.T) {
	const rooms, posts = 100, 100
	srv := testproc.Start(t, ".", "-post-rate", "100000", "-room-rate", "100000", "-join-rate", "100000", "-max-rooms", "200")
	waitUntilServing(t, "http://"+srv.Addr+"/healthz")
	before := rss(t, srv.Cmd.Process.Pid)
	text := "<" + strings.Repeat("😀", maxMessage-1) // 1000 characters, 3997 bytes
	var wg sync.WaitGroup
	var refused atomic.Int32
	for r := range rooms {
		wg.Go(func() {
			p := wirePerson(t, srv.Addr)
			room := fmt.Sprintf("big%d", r)
			p.join(room, "poster")
			for range posts {
				if p.say(room, text) != "published" {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	after := rss(t, srv.Cmd.Process.Pid)
	require.Zero(t, refused.Load())

	resp := wirePerson(t, srv.Addr).post("/rooms/big7/join", url.Values{"nick": {"reader"}})
	b := body(t, resp)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, b, `"text":"<😀😀`, "no HTML escaping")
	t.Logf("%d posts of %d bytes in %d rooms: RSS %d → %d MiB; a join answer is %d bytes",
		rooms*posts, len(text), rooms, before>>20, after>>20, len(b))
	assert.Less(t, len(b), 128<<10, "a join answer's size")
	// What the rooms may keep: 100 rooms of 64 KiB, 6.4 MB (about 25 MiB of
	// RSS, with the garbage collector's headroom); a history bounded only
	// in count keeps all 100 posts a room, 40 MB.
	assert.Less(t, after-before, int64(48<<20), "RSS growth")
}

// rss is a process's resident set size, in bytes.
func rss(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Issue 11.10: at -max-rooms, a new room is refused: a join with 503 and
// Retry-After, a subscription to its topic as forbidden (an event stream
// before it starts), never an answer that brings the client straight back
// or a stream that spins. The rooms the server holds work as before.
func TestRoomCapOverTheWire(t *testing.T) {
	srv := testproc.Start(t, ".", "-max-rooms", "2")
	p := wirePerson(t, srv.Addr)
	p.join("a", "pat")
	p.join("b", "pat")
	resp := p.post("/rooms/c/join", url.Values{"nick": {"pat"}})
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.Contains(t, body(t, resp), "as many rooms")

	status, frames := p.longPoll(subscribe("d", ""))
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, []frame{{Type: "error", Topic: "room:d", Code: "forbidden", Message: "not allowed to subscribe to this topic"}}, frames)
	resp = p.get("/hub/?topic=room:e&v=1", "Accept", "text/event-stream")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.NotEqual(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Less(t, len(body(t, resp)), 1024) // the whole answer: it ends

	assert.Equal(t, "published", p.say("a", "still works"))
	assert.Equal(t, []string{"join:pat:", "message:pat:still works"}, texts(p.poll("a", "0").Events))
	p.stream("b", "")
}

// Issue 11.13: the page is served with a policy that allows no inline
// script and no framing, and no sniffing; the page has no inline script;
// metrics are on -metrics-addr only.
func TestPageHeadersAndMetricsOverTheWire(t *testing.T) {
	metrics := freeAddr(t)
	srv := testproc.Start(t, ".", "-metrics-addr", metrics)
	p := wirePerson(t, srv.Addr)
	for _, path := range []string{"/", "/app.js", "/hub/client.js", "/favicon.ico", "/rooms/lobby/members"} {
		resp := p.get(path)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		csp := resp.Header.Get("Content-Security-Policy")
		for _, directive := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
			assert.Contains(t, csp, directive, path)
		}
		assert.NotContains(t, csp, "unsafe", path)
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), path)
		assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), path)
	}
	page := body(t, p.get("/"))
	assert.Equal(t, strings.Count(page, "<script"), strings.Count(page, `<script type="module" src="/`), "only scripts from files")
	assert.NotContains(t, page, " on", "no inline event handlers")
	assert.NotContains(t, page, "style=", "no inline style")

	assert.Equal(t, http.StatusNotFound, p.get("/metrics").StatusCode, "no metrics on the public address")
	resp := wirePerson(t, metrics).get("/metrics")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body(t, resp), "cometkit_http_requests_total")
}

// Issue 11.4: an idle keep-alive connection is closed after -idle-timeout.
func TestIdleConnectionsClosedOverTheWire(t *testing.T) {
	srv := testproc.Start(t, ".", "-idle-timeout", "300ms")
	conn, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n")
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = r.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the server closed the idle connection")
	t.Logf("an idle connection closed %v after its last answer", time.Since(start).Round(time.Millisecond))
}

// A client that never finishes its headers is hung up on after
// -header-timeout, rather than holding a connection (slowloris).
func TestSlowHeadersOverTheWire(t *testing.T) {
	srv := testproc.Start(t, ".", "-header-timeout", "300ms")
	hungUp, err := testproc.HangsUpOnSlowHeaders(srv.Addr, 10*time.Second)
	require.NoError(t, err)
	assert.True(t, hungUp)
}

// The chat process under SIGTERM with 10,000 of the hub's long-polls
// waiting: every one is answered, and the process exits 0 within its
// drain timeout. The server is a separate process (built here), so each
// side holds 10,000 sockets, under the 20,000 open files a process may
// have.
func TestSIGTERMAnswersEveryWaitingClient(t *testing.T) {
	const clients = 10_000
	metrics := freeAddr(t)
	srv := testproc.Start(t, ".", "-timeout", "5m", "-drain", "20s", "-queue", fmt.Sprint(clients),
		"-max-conns-per-addr", fmt.Sprint(2*clients), "-metrics-addr", metrics,
		"-join-rate", "1000") // the polls make the hundred rooms they name, each as a join would
	addr := srv.Addr
	waitUntilServing(t, "http://"+addr+"/healthz")

	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var answered, failed atomic.Int32
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			poll := fmt.Sprintf(`[{"op":"subscribe","topic":"room:r%d","cursor":"0"}]`, i%100)
			resp, err := client.Post("http://"+addr+"/hub/?v=1", "application/json", strings.NewReader(poll))
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK && string(b) == "[]\n" {
				answered.Add(1)
			} else {
				failed.Add(1)
			}
		})
	}
	// Wait until the server holds every poll (its gauge says so).
	require.Eventually(t, func() bool { return metric(t, metrics, "cometkit_continuations_suspended") == clients },
		time.Minute, 50*time.Millisecond, "polls waiting: %v", metric(t, metrics, "cometkit_continuations_suspended"))

	start := time.Now()
	require.NoError(t, srv.Cmd.Process.Signal(syscall.SIGTERM))
	wg.Wait()
	require.NoError(t, srv.Wait(), "the server's exit")
	assert.Equal(t, int32(clients), answered.Load(), "answered 200, with nothing")
	assert.Zero(t, failed.Load())
	t.Logf("%d waiting clients answered and the process exited 0, %v after SIGTERM", clients, time.Since(start).Round(time.Millisecond))
}

func waitUntilServing(t *testing.T, url string) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "the server did not come up")
	http.DefaultClient.CloseIdleConnections()
}

// metric reads one unlabelled value from the server's /metrics, served on
// addr (-metrics-addr).
func metric(t *testing.T, addr, name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	defer http.DefaultClient.CloseIdleConnections()
	var v float64
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if n, _ := fmt.Sscanf(line, name+" %g", &v); n == 1 {
			return v
		}
	}
	return -1
}

// Issue 11.5: a second SIGTERM during the drain stops the process at
// once, with a failing status. The drain is held by a connection that
// never finishes its headers: http.Server.Shutdown waits for a new
// connection for five seconds. A request on another connection, answered
// after it, shows that the server has accepted it (it accepts in order).
func TestSecondSignalStopsAtOnce(t *testing.T) {
	srv := testproc.Start(t, ".", "-drain", "30s", "-header-timeout", "1m")
	conn, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: chat\r\n")
	require.NoError(t, err)
	waitUntilServing(t, "http://"+srv.Addr+"/healthz")
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()

	require.NoError(t, srv.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		t.Fatalf("the drain was not held: exited at once (%v)", err)
	case <-time.After(time.Second):
	}
	start := time.Now()
	require.NoError(t, srv.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "a failing status")
		assert.Equal(t, 1, exit.ExitCode())
		t.Logf("exited %v after the second SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		t.Fatal("still draining 3 s after the second SIGTERM")
	}
}
