package proxytest_test

import (
	"bufio"
	"bytes"
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
	"github.com/cometkit/cometkit/sse"
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

// A client is one browser's worth of the chat: its own cookie jar (the
// session), and connections from its own loopback address. It speaks the
// chat's HTTP API and, for the rooms' topics, the hub's wire format
// (docs/hub.md).
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

// topicOf is a room's topic on the hub.
func topicOf(room string) string { return "room:" + room }

// join joins room as nick and returns the room's cursor, or fails the
// test.
func (c *client) join(room, nick string) string {
	c.t.Helper()
	cursor, err := c.tryJoin(room, nick)
	if err != nil {
		c.t.Fatalf("join: %v", err)
	}
	return cursor
}

// tryJoin joins room as nick and returns the room's cursor.
func (c *client) tryJoin(room, nick string) (string, error) {
	resp, err := c.hc.PostForm(c.base+"/rooms/"+room+"/join", url.Values{"nick": {nick}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var ans struct{ Cursor string }
	err = decode(resp, http.StatusOK, &ans)
	return ans.Cursor, err
}

// A frame is one of the hub's server frames, the fields the tests read.
type frame struct {
	Type    string `json:"type"`
	Topic   string `json:"topic"`
	Cursor  string `json:"cursor"`
	Data    string `json:"data"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// A hubError is the error frame the hub answered with.
type hubError frame

func (e *hubError) Error() string { return "hub: " + e.Code + ": " + e.Message }

// send posts client frames to the hub as one long-poll, and returns the
// frames of its answer, and the first error frame among them as an error.
func (c *client) send(ctx context.Context, frames ...map[string]any) ([]frame, error) {
	body, _ := json.Marshal(frames)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/hub/?v=1", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var answer []frame
	if err := decode(resp, http.StatusOK, &answer); err != nil {
		return nil, err
	}
	for _, f := range answer {
		if f.Type == "error" {
			return answer, (*hubError)(&f)
		}
	}
	return answer, nil
}

// publish posts a message in room: nil once the hub has stored it.
func (c *client) publish(room, text string) error {
	answer, err := c.send(context.Background(), map[string]any{"op": "publish", "topic": topicOf(room), "data": text, "id": 1})
	if err == nil && (len(answer) != 1 || answer[0].Type != "published") {
		err = fmt.Errorf("publish: the hub answered %+v", answer)
	}
	return err
}

// poll long-polls room from cursor, and returns the answer's frames and
// the cursor to poll from next.
func (c *client) poll(ctx context.Context, room, cursor string) ([]frame, string, error) {
	answer, err := c.send(ctx, map[string]any{"op": "subscribe", "topic": topicOf(room), "cursor": cursor})
	for _, f := range answer {
		if f.Topic == topicOf(room) && f.Cursor != "" {
			cursor = f.Cursor
		}
	}
	return answer, cursor, err
}

// A chatEvent is the chat's event: the data of a room's messages.
type chatEvent struct {
	Type, Nick, Text string
}

// messages returns the texts of the chat's messages (not its joins and
// leaves) among the hub's frames.
func messages(frames []frame) []string {
	var out []string
	for _, f := range frames {
		var ev chatEvent
		if f.Type == "message" && json.Unmarshal([]byte(f.Data), &ev) == nil && ev.Type == "message" {
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

var loopbackAddr = regexp.MustCompile(`127\.0\.[0-9]+\.[0-9]+(:[0-9]+)?`)

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
// 503 with Retry-After, or the hub's "unavailable".
func refused(err error) bool {
	if he, ok := errors.AsType[*hubError](err); ok {
		return he.Code == "unavailable"
	}
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
	r := sse.NewReader(body)
	for {
		ev, err := r.Next()
		if err != nil {
			return
		}
		events <- sseEvent{id: ev.ID, typ: ev.Type, data: string(ev.Data), at: time.Now()}
	}
}

// openStream opens an event stream of room's topic from cursor, or from
// lastID as EventSource reconnects, and checks that it started.
func (c *client) openStream(ctx context.Context, room, cursor, lastID string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+streamPath(room, cursor), nil)
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

// streamPath is the hub's event stream of room's topic from cursor.
func streamPath(room, cursor string) string {
	return "/hub/?v=1&topic=" + url.QueryEscape(topicOf(room)) + "&cursors=" + url.QueryEscape(cursor)
}

// stream opens an event stream of room's topic from cursor and returns
// its events as they arrive; the stream ends with the test.
func (c *client) stream(room, cursor string) <-chan sseEvent {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.t.Cleanup(cancel)
	resp, err := c.openStream(ctx, room, cursor, "")
	if err != nil {
		c.t.Fatalf("stream: %v", err)
	}
	events := make(chan sseEvent, 64)
	go readEvents(resp.Body, events)
	c.t.Cleanup(func() { resp.Body.Close() })
	return events
}

// message returns the chat message an event of a stream carries, if it
// carries one.
func (ev sseEvent) message() (string, bool) {
	var f frame
	if ev.typ != "message" || json.Unmarshal([]byte(ev.data), &f) != nil {
		return "", false
	}
	texts := messages([]frame{f})
	if len(texts) == 0 {
		return "", false
	}
	return texts[0], true
}

// nextMessage returns the text of the next chat message on a stream,
// skipping other events, and when it was read, or fails the test after a
// generous wait.
func nextMessage(t *testing.T, events <-chan sseEvent) (string, time.Time) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the stream ended")
			}
			if text, ok := ev.message(); ok {
				return text, ev.at
			}
		case <-timeout:
			t.Fatal("no message on the stream within 20 s")
		}
	}
}
