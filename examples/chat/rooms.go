package main

import (
	"errors"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

var (
	errTooManyRooms = errors.New("this server holds as many rooms as it may: try again later, or an existing room")
	errRoomFull     = errors.New("this room is full: try again later")
	errNickTaken    = errors.New("that nickname is in use in this room (or one that looks like it): choose another")
	errAbsent       = errors.New("you are not in this room (you left, were away too long, or the server restarted): join again")
)

// rooms are the rooms this node holds, at most max of them: each room's
// members (the nicks present, and the session holding each) and the rate
// limit on what is published in it. A room is made by its first use and
// reclaimed once it has been idle for a while.
type rooms struct {
	max        int
	rate       rate.Limit    // events a room may publish per second
	burst      int           // and in a burst
	renewAfter time.Duration // how often a member's claim is renewed in a shared store

	mu     sync.Mutex
	byName map[string]*room
}

type room struct {
	limiter *rate.Limiter
	members map[string]*member // by the nick's skeleton
	used    time.Time          // its last use
}

// A member is a nick present in a room.
type member struct {
	nick    string
	session string    // the session that holds it
	seen    time.Time // when its client was last heard of
	shared  time.Time // when its claim was last renewed in the shared store
}

func newRooms(max int, perSecond float64, renewAfter time.Duration) *rooms {
	return &rooms{max: max, rate: rate.Limit(perSecond), burst: burstOf(perSecond), renewAfter: renewAfter, byName: make(map[string]*room)}
}

// enter marks the room used, making it if it is new and there is room
// for it (errTooManyRooms if not).
func (rs *rooms) enter(name string, now time.Time) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	_, err := rs.enterLocked(name, now)
	return err
}

// use marks the room used if the node holds it, and reports whether it
// does; it makes no room.
func (rs *rooms) use(name string, now time.Time) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byName[name]
	if r != nil {
		r.used = now
	}
	return r != nil
}

func (rs *rooms) enterLocked(name string, now time.Time) (*room, error) {
	r := rs.byName[name]
	if r == nil {
		if len(rs.byName) >= rs.max {
			return nil, errTooManyRooms
		}
		r = &room{limiter: rate.NewLimiter(rs.rate, rs.burst), members: make(map[string]*member)}
		rs.byName[name] = r
	}
	r.used = now
	return r, nil
}

// allow takes one event from the room's rate limit.
func (rs *rooms) allow(name string, now time.Time) (bool, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, err := rs.enterLocked(name, now)
	if err != nil {
		return false, err
	}
	return r.limiter.AllowN(now, 1), nil
}

// A claim is what claiming a nick in a room did.
type claim struct {
	arrived  bool     // the nick was not present before
	replaced []string // the session's other nicks in the room, now gone
	renew    bool     // its claim in a shared store is due
}

// claim marks the session's nick present in the room now. Another
// session's nick with the same skeleton makes it errNickTaken, a full
// room errRoomFull. A session has one nick in a room: one it held before
// is replaced, if replace, and otherwise the claim is errAbsent (the
// session has joined with another nick since).
func (rs *rooms) claim(name string, ss session, now time.Time, replace bool) (claim, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, err := rs.enterLocked(name, now)
	if err != nil {
		return claim{}, err
	}
	key := skeleton(ss.nick)
	m := r.members[key]
	if m != nil && m.session != ss.id {
		return claim{}, errNickTaken
	}
	var c claim
	var replaced []string // keys
	for k, other := range r.members {
		if other.session == ss.id && k != key {
			if !replace {
				return claim{}, errAbsent
			}
			c.replaced = append(c.replaced, other.nick)
			replaced = append(replaced, k)
		}
	}
	if m == nil && len(r.members)-len(replaced) >= maxMembers {
		return claim{}, errRoomFull
	}
	for _, k := range replaced {
		delete(r.members, k)
	}
	if m == nil {
		m = &member{session: ss.id}
		r.members[key] = m
		c.arrived = true
	}
	m.nick, m.seen = ss.nick, now
	c.renew = c.arrived || now.Sub(m.shared) >= rs.renewAfter
	return c, nil
}

// touch marks the session's nick seen now, if it is present in the room,
// and reports whether it is.
func (rs *rooms) touch(name string, ss session, now time.Time) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byName[name]
	m := r.memberOf(ss)
	if m == nil {
		return false
	}
	m.seen, r.used = now, now
	return true
}

// renewed records that the session's claim was renewed in the shared
// store at now.
func (rs *rooms) renewed(name string, ss session, now time.Time) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if m := rs.byName[name].memberOf(ss); m != nil {
		m.shared = now
	}
}

// release removes the session's nick from the room and reports whether
// it was there.
func (rs *rooms) release(name string, ss session) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byName[name]
	if r.memberOf(ss) == nil {
		return false
	}
	delete(r.members, skeleton(ss.nick))
	return true
}

// holder returns the session holding nick, or one that looks like it,
// in the room.
func (rs *rooms) holder(name, nick string) (session, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byName[name]
	if r == nil {
		return session{}, false
	}
	m := r.members[skeleton(nick)]
	if m == nil {
		return session{}, false
	}
	return session{id: m.session, nick: m.nick}, true
}

func (r *room) memberOf(ss session) *member {
	if r == nil {
		return nil
	}
	if m := r.members[skeleton(ss.nick)]; m != nil && m.session == ss.id {
		return m
	}
	return nil
}

// sessions lists the sessions present in the room, with their nicks.
func (rs *rooms) sessions(name string) []session {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []session
	if r := rs.byName[name]; r != nil {
		for _, m := range r.members {
			out = append(out, session{id: m.session, nick: m.nick})
		}
	}
	return out
}

// members lists the room's nicks, sorted; none for a room not held.
func (rs *rooms) members(name string) []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := []string{}
	if r := rs.byName[name]; r != nil {
		for _, m := range r.members {
			out = append(out, m.nick)
		}
	}
	slices.Sort(out)
	return out
}

// A departure is a nick that timed out of a room.
type departure struct {
	room string
	who  session
}

// expire removes the members not heard of since before cutoff, and
// returns them.
func (rs *rooms) expire(cutoff time.Time) []departure {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var gone []departure
	for name, r := range rs.byName {
		for key, m := range r.members {
			if m.seen.Before(cutoff) {
				delete(r.members, key)
				gone = append(gone, departure{name, session{id: m.session, nick: m.nick}})
			}
		}
	}
	return gone
}

// reclaim drops the rooms with no members that have not been used since
// before cutoff and in which busy (someone waiting) is false.
func (rs *rooms) reclaim(cutoff time.Time, busy func(room string) bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for name, r := range rs.byName {
		if len(r.members) == 0 && r.used.Before(cutoff) && !busy(name) {
			delete(rs.byName, name)
		}
	}
}
