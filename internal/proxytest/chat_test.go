package proxytest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cometkit/cometkit/internal/proxytest"
)

// chat is the chat example, built once for the package's tests by
// TestMain, so that each node is its own process as in production.
var chat string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "proxytest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	chat = filepath.Join(dir, "chat")
	build := exec.Command("go", "build", "-o", chat, "../../examples/chat")
	build.Stderr = os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxytest: building the chat:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// A node is one chat server process, which a test can stop (gracefully,
// as an operator does) and start again on the same address, as a restart
// does. Every node trusts X-Forwarded-For from 127.0.0.1, where the
// proxies connect from, and serves its metrics on a loopback address of
// its own. Its ports are chosen by [proxytest.FreeAddr], so that no other
// process takes them while it restarts.
type node struct {
	t       *testing.T
	addr    string
	metrics string
	args    []string
	proc    *process // the running one
}

// A process is one run of a node.
type process struct {
	cmd    *exec.Cmd
	output strings.Builder // its log, read once it has exited
	done   chan struct{}
	err    error // how it exited, once done is closed
}

// startNode starts a node with the chat's flags in args; it is killed at
// the end of the test.
func startNode(t *testing.T, args ...string) *node {
	t.Helper()
	n := &node{t: t, addr: proxytest.FreeAddr(t), metrics: proxytest.FreeAddr(t)}
	n.args = append([]string{"-addr", n.addr, "-trusted-proxies", "127.0.0.1", "-metrics-addr", n.metrics}, args...)
	n.start()
	return n
}

// start runs the node's process and waits until it accepts connections.
func (n *node) start() {
	n.t.Helper()
	p := &process{cmd: exec.Command(chat, n.args...), done: make(chan struct{})}
	p.cmd.Stderr = &p.output
	if err := p.cmd.Start(); err != nil {
		n.t.Fatalf("chat: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	n.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	n.proc = p
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", n.addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			n.t.Fatalf("chat on %s exited at start (%v):\n%s", n.addr, p.err, p.output.String())
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("chat: does not listen on %s", n.addr)
		}
	}
}

// stop sends SIGTERM and waits for the node to drain and exit, which it
// must do cleanly.
func (n *node) stop() {
	n.t.Helper()
	n.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.proc.done:
		if n.proc.err != nil {
			n.t.Errorf("chat on %s: after SIGTERM: %v", n.addr, n.proc.err)
		}
	case <-time.After(30 * time.Second):
		n.t.Fatalf("chat on %s: still running 30 s after SIGTERM", n.addr)
	}
}

// suspended is how many requests wait on the node now, from its metrics.
func (n *node) suspended() (int, error) {
	resp, err := http.Get("http://" + n.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "cometkit_continuations_suspended "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("no cometkit_continuations_suspended in %s's metrics", n.addr)
}

// waitSuspended waits until the nodes hold want waiting requests between
// them, or until, with gone of them answered or failed, they cannot.
func waitSuspended(t *testing.T, want int, gone func() int, nodes ...*node) {
	t.Helper()
	have := 0
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		have = 0
		for _, n := range nodes {
			s, err := n.suspended()
			if err != nil {
				t.Fatal(err)
			}
			have += s
		}
		if have >= want {
			return
		}
		if gone() > 0 && have+gone() >= want {
			break
		}
	}
	t.Errorf("%d requests waiting on the nodes (%d gone), want %d", have, gone(), want)
}

// A client is one browser's worth of the chat's HTTP API: its own cookie
// jar (the session), and connections from its own loopback address.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

// join joins room as nick and returns the room's cursor.
func (c *client) join(room, nick string) string {
	c.t.Helper()
	resp, err := c.hc.PostForm(c.base+"/rooms/"+room+"/join", url.Values{"nick": {nick}})
	if err != nil {
		c.t.Fatalf("join: %v", err)
	}
	defer resp.Body.Close()
	var ans struct{ Cursor string }
	if err := decode(resp, http.StatusOK, &ans); err != nil {
		c.t.Fatalf("join: %v", err)
	}
	return ans.Cursor
}

// post sends a message: nil if it was accepted, a *statusError if it was
// answered otherwise.
func (c *client) post(room, text string) error {
	resp, err := c.hc.PostForm(c.base+"/rooms/"+room+"/messages", url.Values{"text": {text}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return check(resp, http.StatusNoContent)
}

// A poll is one long-poll's answer.
type poll struct {
	Events   []chatEvent
	Complete bool
	Next     string
}

// A chatEvent is the chat's event, as both transports carry it.
type chatEvent struct {
	Type, Nick, Text string
}

// poll long-polls room from cursor since.
func (c *client) poll(ctx context.Context, room, since string) (poll, error) {
	var p poll
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		c.base+"/rooms/"+room+"/subscribe?transport=longpoll&since="+url.QueryEscape(since), nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	return p, decode(resp, http.StatusOK, &p)
}

// messages returns the texts of the message events among evs.
func messages(evs []chatEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == "message" {
			out = append(out, ev.Text)
		}
	}
	return out
}

// errorKind is err without the addresses and ports that make each
// error's text unique, for counting errors of each kind.
func errorKind(err error) string {
	return loopbackAddr.ReplaceAllString(err.Error(), "127.0.0.1")
}

var loopbackAddr = regexp.MustCompile(`127\.0\.0\.[0-9]+(:[0-9]+)?`)

// A statusError is an answer other than the one wanted.
type statusError struct {
	path       string
	code       int
	retryAfter string
	body       string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: %d %q", e.path, e.code, e.body)
}

// refused reports whether err is a refusal the client is told to retry:
// 503 with Retry-After.
func refused(err error) bool {
	se, ok := errors.AsType[*statusError](err)
	return ok && se.code == http.StatusServiceUnavailable && se.retryAfter != ""
}

// check returns a *statusError unless resp has the status wanted.
func check(resp *http.Response, want int) error {
	if resp.StatusCode == want {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return &statusError{resp.Request.URL.Path, resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
}

// decode checks that resp has the status wanted and decodes its JSON.
func decode(resp *http.Response, want int, v any) error {
	if err := check(resp, want); err != nil {
		return err
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// An sseEvent is one server-sent event as a stream carries it.
type sseEvent struct {
	id, typ, data string
	at            time.Time // when it was read
}

// readEvents reads the server-sent events of a stream into events, each
// when its blank line arrives, until the stream ends; then it closes
// events.
func readEvents(body io.Reader, events chan<- sseEvent) {
	defer close(events)
	var ev sseEvent
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if ev.typ != "" || ev.data != "" {
				ev.at = time.Now()
				events <- ev
			}
			ev = sseEvent{}
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id = value
		case "event":
			ev.typ = value
		case "data":
			if ev.data != "" {
				ev.data += "\n"
			}
			ev.data += value
		}
	}
}

// openStream opens room's event stream from cursor since, or from
// lastID as EventSource reconnects, and checks that it started.
func (c *client) openStream(ctx context.Context, room, since, lastID string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		c.base+"/rooms/"+room+"/subscribe?transport=sse&since="+url.QueryEscape(since), nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.hc.Do(req)
	if err == nil {
		if err = check(resp, http.StatusOK); err != nil {
			resp.Body.Close()
		}
	}
	return resp, err
}

// stream opens room's event stream from cursor since and returns its
// events as they arrive; the stream ends with the test.
func (c *client) stream(room, since string) <-chan sseEvent {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.t.Cleanup(cancel)
	resp, err := c.openStream(ctx, room, since, "")
	if err != nil {
		c.t.Fatalf("stream: %v", err)
	}
	events := make(chan sseEvent, 64)
	go readEvents(resp.Body, events)
	c.t.Cleanup(func() { resp.Body.Close() })
	return events
}

// nextMessage returns the next chat message on a stream, skipping other
// events, or fails the test after a generous wait.
func nextMessage(t *testing.T, events <-chan sseEvent) (sseEvent, chatEvent) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the stream ended")
			}
			var ce chatEvent
			if ev.typ == "message" && json.Unmarshal([]byte(ev.data), &ce) == nil {
				return ev, ce
			}
		case <-timeout:
			t.Fatal("no message on the stream within 20 s")
		}
	}
}
