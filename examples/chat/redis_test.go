package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/internal/testredis"
)

func redisAt(url string) func(*config) { return func(c *config) { c.redisURL = url } }

// Two chat nodes on one Redis, as behind a load balancer: a message posted
// on one reaches a client waiting on the other; a session made on one
// works on the other; a nick present through one cannot be taken through
// the other; a client polling the other node with its cursor gets what it
// has not seen, and nothing twice.
func TestTwoNodesShareRooms(t *testing.T) {
	r := testredis.Start(t)
	a := newChat(t, redisAt("redis://"+r.Addr+"/0"))
	b := newChat(t, redisAt("redis://"+r.Addr+"/0"))
	assert.Equal(t, a.s.signer.key, b.s.signer.key, "one session key, kept in Redis")

	alice, viewer := a.person(), b.person()
	j := alice.join("lobby", "alice")
	polled := make(chan answer, 1)
	go func() { polled <- viewer.poll("lobby", j.Cursor) }()
	require.Eventually(t, func() bool { return b.s.mgr.Count("room:lobby") == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, http.StatusNoContent, alice.at(b.ts.URL).say("lobby", "hello through b"), "a's session on b")
	got := <-polled
	assert.Equal(t, []string{"message:alice:hello through b"}, texts(got.Events))

	for _, node := range []*chat{a, b} {
		resp := node.person().post("/rooms/lobby/join", map[string][]string{"nick": {"Alice"}})
		assert.Equal(t, http.StatusConflict, resp.StatusCode, "alice's nick, through either node")
	}

	bob := b.person()
	bob.join("lobby", "bob")
	assert.Equal(t, http.StatusNoContent, bob.say("lobby", "hello from bob"))
	assert.Equal(t, texts(a.person().join("lobby", "carol").History[:4]), texts(bob.join("lobby", "bob").History[:4]),
		"the same history on both nodes")

	// Seen up to "hello through b" on b; polls a.
	next := viewer.at(a.ts.URL).poll("lobby", got.Next)
	assert.True(t, next.Complete)
	assert.Equal(t, []string{"join:bob:", "message:bob:hello from bob", "join:carol:"}, texts(next.Events))

	// Alice leaves through b, where she never was: her nick is free on a.
	alice.at(b.ts.URL).post("/rooms/lobby/leave", nil)
	assert.Equal(t, "alice", a.person().join("lobby", "alice").Nick)
}

// A nick that timed out of both nodes is announced as gone once; one that
// is still present through another node is not announced at all.
func TestDepartureAnnouncedOnce(t *testing.T) {
	r := testredis.Start(t)
	a := newChat(t, redisAt("redis://"+r.Addr+"/0"), pollTimeout(200*time.Millisecond))
	b := newChat(t, redisAt("redis://"+r.Addr+"/0"), pollTimeout(200*time.Millisecond))
	dave := a.person()
	j := dave.join("hall", "dave")
	dave.at(b.ts.URL).poll("hall", "") // present through b too

	leaves := func() (n int, next string) {
		a := a.person().poll("hall", "")
		for _, ev := range a.Events {
			if ev.Type == "leave" {
				n++
			}
		}
		return n, a.Next
	}
	// dave keeps polling b: a's sweep drops him from a's members, quietly.
	require.Eventually(t, func() bool {
		dave.at(b.ts.URL).get("/rooms/hall/subscribe?since=" + j.Cursor).Body.Close()
		return len(a.s.rooms.members("hall")) == 0
	}, 10*time.Second, 50*time.Millisecond)
	n, _ := leaves()
	assert.Zero(t, n)

	// Then he stops: b drops him, and announces it, once; a says nothing
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
