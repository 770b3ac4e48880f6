package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/internal/testredis"
)

// Two chat nodes on one Redis, as behind a load balancer: a message posted
// on one reaches a client waiting on the other; joining either shows the
// same history; a client re-polling the other node with its cursor gets
// what it has not seen, and nothing twice.
func TestTwoNodesShareRooms(t *testing.T) {
	r := testredis.Start(t)
	a := newChatNode(t, time.Minute, "redis://"+r.Addr+"/0")
	b := newChatNode(t, time.Minute, "redis://"+r.Addr+"/0")

	j := a.join("lobby", "alice")
	polled := make(chan []event, 1)
	go func() {
		var evs []event
		json.NewDecoder(b.get("/rooms/lobby/subscribe?since=" + itoa(j.Cursor)).Body).Decode(&evs)
		polled <- evs
	}()
	require.Eventually(t, func() bool { return b.s.mgr.Count("room:lobby") == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, http.StatusNoContent, a.say("lobby", "alice", "hello from a"))
	evs := <-polled
	require.Len(t, evs, 1)
	assert.Equal(t, "hello from a", evs[0].Text)

	assert.Equal(t, http.StatusNoContent, b.say("lobby", "bob", "hello from b"))
	onB := b.join("lobby", "carol")
	assert.Equal(t, a.join("lobby", "dave").History[:3], onB.History[:3], "the same history on both nodes")

	// Seen up to "hello from a" on b; re-polls a.
	evs = decodeEvents(t, a.get("/rooms/lobby/subscribe?since="+itoa(evs[0].Seq)))
	require.NotEmpty(t, evs)
	assert.Equal(t, "hello from b", evs[0].Text)
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
