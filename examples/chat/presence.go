package main

import (
	"slices"
	"sync"
	"time"
)

// presence tracks who is in each room: a nick is present from its join
// (or any poll naming it) until it leaves or has not been seen for the
// presence timeout.
type presence struct {
	mu    sync.Mutex
	rooms map[string]map[string]time.Time // room → nick → last seen
}

func newPresence() *presence { return &presence{rooms: make(map[string]map[string]time.Time)} }

// touch marks nick seen in room now and reports whether it just arrived.
func (p *presence) touch(room, nick string, now time.Time) (arrived bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	nicks := p.rooms[room]
	if nicks == nil {
		nicks = make(map[string]time.Time)
		p.rooms[room] = nicks
	}
	_, present := nicks[nick]
	nicks[nick] = now
	return !present
}

// leave removes nick from room and reports whether it was there.
func (p *presence) leave(room, nick string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.rooms[room][nick]; !ok {
		return false
	}
	delete(p.rooms[room], nick)
	if len(p.rooms[room]) == 0 {
		delete(p.rooms, room)
	}
	return true
}

// members lists room's nicks, sorted.
func (p *presence) members(room string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.rooms[room]))
	for nick := range p.rooms[room] {
		out = append(out, nick)
	}
	slices.Sort(out)
	return out
}

// departure is a nick that timed out of a room.
type departure struct{ room, nick string }

// expire removes the nicks not seen since before cutoff and returns them.
func (p *presence) expire(cutoff time.Time) []departure {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gone []departure
	for room, nicks := range p.rooms {
		for nick, seen := range nicks {
			if seen.Before(cutoff) {
				delete(nicks, nick)
				gone = append(gone, departure{room, nick})
			}
		}
		if len(nicks) == 0 {
			delete(p.rooms, room)
		}
	}
	return gone
}
