package main

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A node holds at most max rooms; an idle room with no members and no one
// waiting is reclaimed, and makes room for a new one.
func TestRoomsReclaimed(t *testing.T) {
	rs := newRooms(3, 10, time.Second)
	t0 := time.Unix(1_800_000_000, 0)
	require.NoError(t, rs.enter("empty", t0))
	require.NoError(t, rs.enter("waited-on", t0))
	_, err := rs.claim("occupied", session{id: "s1", nick: "ann"}, t0, true)
	require.NoError(t, err)
	assert.ErrorIs(t, rs.enter("new", t0), errTooManyRooms)
	_, err = rs.claim("new", session{id: "s2", nick: "bo"}, t0, true)
	assert.ErrorIs(t, err, errTooManyRooms)

	waiting := func(room string) bool { return room == "waited-on" }
	rs.reclaim(t0, waiting) // none idle before t0
	assert.ErrorIs(t, rs.enter("new", t0), errTooManyRooms)
	rs.reclaim(t0.Add(time.Minute), waiting)
	assert.NoError(t, rs.enter("new", t0.Add(time.Minute)), "the idle empty room went")
	assert.Equal(t, []string{"ann"}, rs.members("occupied"), "a room with members stays")
	assert.ErrorIs(t, rs.enter("another", t0), errTooManyRooms, "so does a room someone waits on")
}

// A room holds at most maxMembers nicks; a member's session renews its
// claim in a shared store once renewAfter has passed.
func TestRoomMembers(t *testing.T) {
	rs := newRooms(1, 10, time.Second)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range maxMembers {
		c, err := rs.claim("full", session{id: "s" + strconv.Itoa(i), nick: "n" + strconv.Itoa(i)}, t0, true)
		require.NoError(t, err)
		require.True(t, c.arrived && c.renew)
	}
	_, err := rs.claim("full", session{id: "late", nick: "late"}, t0, true)
	assert.ErrorIs(t, err, errRoomFull)
	rs.renewed("full", session{id: "s0", nick: "n0"}, t0)
	c, err := rs.claim("full", session{id: "s0", nick: "n0"}, t0.Add(time.Second/2), true)
	require.NoError(t, err)
	assert.False(t, c.arrived || c.renew, "present, and renewed half a second ago")
	c, _ = rs.claim("full", session{id: "s0", nick: "n0"}, t0.Add(2*time.Second), true)
	assert.True(t, c.renew, "due again")

	assert.True(t, rs.touch("full", session{id: "s1", nick: "n1"}, t0.Add(2*time.Second)))
	assert.False(t, rs.touch("full", session{id: "s1", nick: "other"}, t0), "not the nick s1 holds")
	_, err = rs.claim("full", session{id: "s1", nick: "other"}, t0, false)
	assert.ErrorIs(t, err, errAbsent, "a session that holds another nick, and may not replace it")

	gone := rs.expire(t0.Add(time.Second))
	assert.Len(t, gone, maxMembers-2, "all but the ones heard of since")
	assert.Equal(t, []string{"n0", "n1"}, rs.members("full"))
}

// A nick not renewed for three presence intervals leaves, and is
// announced.
func TestPresenceTimesOut(t *testing.T) {
	c := newChat(t, presence(50*time.Millisecond))
	ann := c.person()
	j := ann.join("lobby", "ann")
	require.Eventually(t, func() bool { return len(c.s.rooms.members("lobby")) == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{"leave:ann:"}, texts(c.person().poll("lobby", j.Cursor).Events))
}

// A rate limit per key: a burst of three seconds' worth, then the rate; a
// new key beyond the keys it may hold is refused until idle keys are
// forgotten.
func TestLimiters(t *testing.T) {
	ls := newLimiters(1)
	ls.max = 2
	t0 := time.Unix(1_800_000_000, 0)
	for range 3 {
		assert.True(t, ls.allow("a", t0))
	}
	assert.False(t, ls.allow("a", t0), "past the burst")
	assert.True(t, ls.allow("a", t0.Add(time.Second)), "a second later")
	assert.True(t, ls.allow("b", t0))
	assert.False(t, ls.allow("c", t0), "a third key, with two held")
	ls.sweep(t0.Add(time.Millisecond)) // b was last used at t0
	assert.True(t, ls.allow("c", t0), "b forgotten")
	assert.False(t, ls.allow("a", t0.Add(time.Second)), "a kept its state")
}
