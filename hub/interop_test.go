package hub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/hub"
)

// node runs a script of testdata/node against the hub and returns its
// stdout, line by line, and its stdin. The packages it needs are installed
// by ./test (npm ci); a machine without them fails the test rather than
// skip it.
func node(t *testing.T, script string, args ...string) (<-chan string, io.Writer) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: ./test installs it (Debian's nodejs and npm)")
	}
	dir := filepath.Join("testdata", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		t.Fatal("the npm packages are not installed: ./test installs them (npm ci in hub/testdata/node)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir, cmd.Stderr = dir, os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		for range lines { // until the process's stdout closes
		}
		cmd.Wait()
	})
	return lines, stdin
}

func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		require.True(t, ok, "the node script ended early")
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no line from the node script")
		return ""
	}
}

// Node's ws package: the subprotocol, subscribe, publish, messages, and a
// clean close.
func TestInteropNodeWS(t *testing.T) {
	th := newHub(t, nil, hub.WithAuthorizer(allowPublish("node")))
	lines, _ := node(t, "ws.mjs", "ws"+strings.TrimPrefix(th.url(), "http"), "room:a", "3")
	assert.JSONEq(t, `{"type":"open","protocol":"cometkit-hub.v1"}`, nextLine(t, lines))
	assert.Equal(t, "subscribed", decodeFrame(t, []byte(nextLine(t, lines))).Type)
	// The ack and the message it published may come in either order.
	var got []serverFrame
	for len(got) < 2 {
		got = append(got, decodeFrame(t, []byte(nextLine(t, lines))))
	}
	types := []string{got[0].Type, got[1].Type}
	assert.ElementsMatch(t, []string{"published", "message"}, types)
	th.publish("room:a", "two")
	th.publish("room:a", "three")
	var data []string
	for len(data) < 2 {
		if f := decodeFrame(t, []byte(nextLine(t, lines))); f.Type == "message" {
			data = append(data, f.Data)
		}
	}
	assert.Equal(t, []string{"two", "three"}, data)
	assert.JSONEq(t, `{"type":"closed","code":1000}`, nextLine(t, lines))
}

// The eventsource package: two topics, a broken stream, and its own
// reconnection with Last-Event-ID resuming both without a gap or a
// duplicate.
func TestInteropNodeEventSource(t *testing.T) {
	th := newHub(t, nil)
	lines, _ := node(t, "sse.mjs", th.url()+"?topic=a&topic=b", "4")
	type line struct {
		Event string      `json:"event"`
		ID    string      `json:"id"`
		Frame serverFrame `json:"frame"`
	}
	read := func() line {
		var l line
		require.NoError(t, json.Unmarshal([]byte(nextLine(t, lines)), &l))
		return l
	}
	assert.Equal(t, "subscribed", read().Event)
	assert.Equal(t, "0,0", read().ID)
	th.publish("a", "a1")
	th.publish("b", "b1")
	assert.Equal(t, "a1", read().Frame.Data)
	assert.Equal(t, "b1", read().Frame.Data)

	th.srv.CloseClientConnections()
	assert.Equal(t, "disconnected", read().Event)
	th.publish("a", "a2") // while the client is away
	th.publish("b", "b2")
	var data []string
	for len(data) < 2 {
		if l := read(); l.Event == "message" {
			data = append(data, l.Frame.Data)
		} else {
			assert.Equal(t, "subscribed", l.Event)
		}
	}
	assert.Equal(t, []string{"a2", "b2"}, data)
}
