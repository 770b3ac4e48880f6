package main

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// sharedClaims keep, in Redis, which session holds each nick in each room,
// so that a nick present through one node cannot be taken through
// another. A claim is a key, the nick's skeleton in the room, whose value
// is the holding session's id; it expires unless renewed, and the nodes
// its page renews its presence through renew it. When a nick leaves or
// times out, the key
// says so ("-" and the id) for a while, so that of the nodes that saw the
// nick, exactly one announces its departure.
type sharedClaims struct {
	rdb  *redis.Client
	ttl  time.Duration // a claim not renewed for this long expires
	gone time.Duration // how long the mark of a departure stays
}

func (sc *sharedClaims) key(room, nick string) string {
	return "cometkit:chat:nick:" + room + ":" + skeleton(nick)
}

// claimScript takes or renews a claim: 0 if another session holds it,
// 1 if it was free, 2 if the session held it already.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] and string.sub(v, 1, 1) ~= '-' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if v == ARGV[1] then return 2 end
return 1`)

// claim takes or renews the session's claim on its nick in room. It
// returns errNickTaken if another session holds it, and reports whether
// the nick is new to the room (it was free).
func (sc *sharedClaims) claim(ctx context.Context, room string, ss session) (fresh bool, err error) {
	n, err := sc.run(ctx, claimScript, room, ss, sc.ttl)
	switch {
	case err != nil:
		return false, err
	case n == 0:
		return false, errNickTaken
	}
	return n == 1, nil
}

// releaseScript gives a claim up, if the session holds it, leaving the
// mark of its departure.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], '-' .. ARGV[1], 'PX', ARGV[2])
return 1`)

// release gives up the session's claim on its nick in room, and reports
// whether it held one: it left.
func (sc *sharedClaims) release(ctx context.Context, room string, ss session) (bool, error) {
	n, err := sc.run(ctx, releaseScript, room, ss, sc.gone)
	return n == 1, err
}

// departScript marks an expired claim as departed: 1 if this call did,
// so its node announces the departure; 0 if the claim is alive (renewed
// through another node), already marked, or another session's.
var departScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) then return 0 end
redis.call('SET', KEYS[1], '-' .. ARGV[1], 'PX', ARGV[2])
return 1`)

// depart reports whether this node should announce that the session's
// nick, which timed out here, left room.
func (sc *sharedClaims) depart(ctx context.Context, room string, ss session) (bool, error) {
	n, err := sc.run(ctx, departScript, room, ss, sc.gone)
	return n == 1, err
}

// renewScript extends a claim the session holds: 1 if it does, 0 if the
// claim is gone, marked departed, or another session's.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)

// renew extends the session's claim on its nick in room, and reports
// whether the session still holds it: it never takes a claim back after a
// departure, as claim would.
func (sc *sharedClaims) renew(ctx context.Context, room string, ss session) (bool, error) {
	n, err := sc.run(ctx, renewScript, room, ss, sc.ttl)
	return n == 1, err
}

// run runs a claim script on the key of the session's nick in room, with
// the session's id and ttl (how long the value it sets lasts) as its
// arguments, and returns the script's answer.
func (sc *sharedClaims) run(ctx context.Context, script *redis.Script, room string, ss session, ttl time.Duration) (int, error) {
	return script.Run(ctx, sc.rdb, []string{sc.key(room, ss.nick)}, ss.id, ttl.Milliseconds()).Int()
}

// givenUp returns those of the sessions whose claim on their nick in room was
// given up (the mark of a departure) or is another session's. A claim that
// merely expired is not among them: the node that times the nick out
// announces its departure.
func (sc *sharedClaims) givenUp(ctx context.Context, room string, sessions []session) ([]session, error) {
	if len(sessions) == 0 {
		return nil, nil
	}
	keys := make([]string, len(sessions))
	for i, ss := range sessions {
		keys[i] = sc.key(room, ss.nick)
	}
	values, err := sc.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	var out []session
	for i, v := range values {
		if v, ok := v.(string); ok && v != sessions[i].id {
			out = append(out, sessions[i])
		}
	}
	return out, nil
}

// holds reports whether the session holds its nick in room.
func (sc *sharedClaims) holds(ctx context.Context, room string, ss session) (bool, error) {
	v, err := sc.rdb.Get(ctx, sc.key(room, ss.nick)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return v == ss.id, err
}
