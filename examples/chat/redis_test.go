package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/internal/testredis"
)

// twoNodes starts two chat servers on one Redis.
func twoNodes(t *testing.T, set ...func(*config)) (a, b *chat) {
	r := testredis.Start(t)
	set = append(set, func(c *config) { c.redisURL = "redis://" + r.Addr + "/0" })
	return newChat(t, set...), newChat(t, set...)
}

// quickly makes nicks time out, and long-polls answer, in a fifth of a
// second.
func quickly(c *config) { c.presence, c.pollTimeout = 200*time.Millisecond, 200*time.Millisecond }

// Two chat nodes on one Redis, as behind a load balancer: a message posted
// on one reaches a client waiting on the other; a session made on one
// works on the other; a nick present through one cannot be taken through
// the other; a client polling the other node with its cursor gets what it
// has not seen, and nothing twice.
func TestTwoNodesShareRooms(t *testing.T) {
	a, b := twoNodes(t)
	assert.Equal(t, a.s.signer.key, b.s.signer.key, "one session key, kept in Redis")

	alice, viewer := a.person(), b.person()
	j := alice.join("lobby", "alice")
	polled := make(chan answer, 1)
	go func() { polled <- viewer.poll("lobby", j.Cursor) }()
	require.Eventually(t, func() bool { return b.s.mgr.Count("room:lobby") == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, "published", alice.at(b.ts.URL).say("lobby", "hello through b"), "a's session, and presence, on b")
	got := <-polled
	assert.Equal(t, []string{"message:alice:hello through b"}, texts(got.Events))

	for _, node := range []*chat{a, b} {
		resp := node.person().post("/rooms/lobby/join", map[string][]string{"nick": {"Alice"}})
		assert.Equal(t, http.StatusConflict, resp.StatusCode, "alice's nick, through either node")
	}

	bob := b.person()
	bob.join("lobby", "bob")
	assert.Equal(t, "published", bob.say("lobby", "hello from bob"))
	assert.Equal(t, texts(a.person().join("lobby", "carol").History[:4]), texts(bob.join("lobby", "bob").History[:4]),
		"the same history on both nodes")

	// Seen up to "hello through b" on b; polls a.
	next := viewer.at(a.ts.URL).poll("lobby", got.Next)
	assert.True(t, next.Complete)
	assert.Equal(t, []string{"join:bob:", "message:bob:hello from bob", "join:carol:"}, texts(next.Events))

	// Alice leaves through b, where she never joined: a no longer lists
	// her (a lists whom it knows present through it), and her nick is free
	// there.
	assert.Equal(t, []string{"alice", "carol"}, a.person().members("lobby"))
	alice.at(b.ts.URL).post("/rooms/lobby/leave", nil)
	assert.Equal(t, []string{"carol"}, a.person().members("lobby"))
	assert.Equal(t, "alice", a.person().join("lobby", "alice").Nick)
}

// A nick that leaves through one node while its page's renewal (or a
// post) is on its way to another does not come back, on either node, and
// the room is told once that it left.
func TestLeaveAcrossNodes(t *testing.T) {
	a, b := twoNodes(t, quickly)
	alice := a.person()
	alice.join("hall", "alice")
	require.Equal(t, http.StatusNoContent, alice.at(b.ts.URL).here("hall"), "present through b too")
	require.Equal(t, http.StatusNoContent, alice.at(b.ts.URL).post("/rooms/hall/leave", nil).StatusCode)

	assert.Equal(t, http.StatusGone, alice.here("hall"), "a renewal that reaches a after the leave")
	assert.Equal(t, "forbidden", alice.say("hall", "a post that reaches a after the leave"))
	assert.Empty(t, a.person().members("hall"))
	assert.Empty(t, b.person().members("hall"))

	time.Sleep(4 * 3 * 200 * time.Millisecond) // four times as long as a nick takes to time out
	var notices []string
	for _, ev := range a.person().poll("hall", "0").Events {
		notices = append(notices, ev.Type+":"+ev.Nick)
	}
	assert.Equal(t, []string{"join:alice", "leave:alice"}, notices)
}

// A nick that timed out of both nodes is announced as gone once; one that
// is still present through another node is not announced at all.
func TestDepartureAnnouncedOnce(t *testing.T) {
	a, b := twoNodes(t, quickly)
	dave := a.person()
	dave.join("hall", "dave")
	require.Equal(t, http.StatusNoContent, dave.at(b.ts.URL).here("hall"), "present through b too")

	leaves := func() (n int, next string) {
		a := a.person().poll("hall", "0")
		for _, ev := range a.Events {
			if ev.Type == "leave" {
				n++
			}
		}
		return n, a.Next
	}
	// dave's page renews through b: a's sweep drops him from a's members,
	// quietly.
	require.Eventually(t, func() bool {
		require.Equal(t, http.StatusNoContent, dave.at(b.ts.URL).here("hall"))
		return len(a.s.rooms.members("hall")) == 0
	}, 10*time.Second, 50*time.Millisecond)
	n, _ := leaves()
	assert.Zero(t, n)

	// Then it stops: b drops him, and announces it, once; a says nothing
	// more over the next sweeps (each poll waits a poll timeout).
	require.Eventually(t, func() bool { n, _ := leaves(); return n == 1 }, 10*time.Second, 50*time.Millisecond)
	_, next := leaves()
	for range 3 {
		later := a.person().poll("hall", next)
		assert.Empty(t, later.Events)
		next = later.Next
	}
	assert.Empty(t, b.s.rooms.members("hall"))
}
