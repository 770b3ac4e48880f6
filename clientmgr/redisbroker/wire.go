package redisbroker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cometkit/cometkit/clientmgr"
)

// publishScript assigns a message its Seq, appends it to the topic's
// stream and publishes it, atomically. A sequence key that is gone while
// the stream is not (expired, deleted by hand) restarts from the stream's
// newest ID, so Seq never goes back while history remains. A sequence
// that starts at 1 gets an epoch, its start time, carried by every message:
// if Redis loses its data, the new sequence has a new epoch, and nodes
// know to drop what they hold rather than ignore Seqs they have seen.
//
// Seq never goes back behind what the publishing node holds either: a
// Redis that restarts from an AOF missing its last writes (fsync once a
// second) would hand out Seqs the nodes already have, and they would take
// the new messages for old ones; the node's last Seq is a floor.
//
// KEYS: the topic's sequence key, stream and epoch key. ARGV: the channel,
// the history size, the publish time in Unix nanoseconds, the topic, the
// data, the publishing node's last Seq of the topic. Returns {seq, epoch}.
// The channel's payload is "<seq> <time> <epoch> <len(topic)> <topic><data>".
var publishScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
	if #newest > 0 then
		redis.call('SET', KEYS[1], string.match(newest[1][1], '^(%d+)'))
	end
end
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[6])
if seq <= floor and redis.call('EXISTS', KEYS[3]) == 1 then
	seq = floor + 1
	redis.call('SET', KEYS[1], seq)
end
if seq == 1 then
	redis.call('SET', KEYS[3], ARGV[3])
end
local epoch = redis.call('GET', KEYS[3]) or '0'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq), 't', ARGV[3], 'e', epoch, 'd', ARGV[5])
redis.call('PUBLISH', ARGV[1], string.format('%d %s %s %d ', seq, ARGV[3], epoch, #ARGV[4]) .. ARGV[4] .. ARGV[5])
return {seq, epoch}
`)

// envelope is a message with the epoch of its topic's sequence.
type envelope struct {
	clientmgr.Message
	epoch uint64
}

var errBadPayload = errors.New("malformed message")

// decode parses a message published by publishScript.
func decode(payload string) (envelope, error) {
	var fields [4]uint64
	rest := payload
	for i := range fields {
		head, tail, ok := strings.Cut(rest, " ")
		if !ok {
			return envelope{}, errBadPayload
		}
		n, err := strconv.ParseUint(head, 10, 64)
		if err != nil {
			return envelope{}, errBadPayload
		}
		fields[i], rest = n, tail
	}
	seq, nanos, epoch, topicLen := fields[0], fields[1], fields[2], fields[3]
	if seq == 0 || topicLen == 0 || topicLen > uint64(len(rest)) {
		return envelope{}, errBadPayload
	}
	return envelope{clientmgr.Message{
		Topic: rest[:topicLen],
		Seq:   seq,
		Data:  []byte(rest[topicLen:]),
		Time:  time.Unix(0, int64(nanos)),
	}, epoch}, nil
}

// fromEntry turns a stream entry into the message it holds.
func fromEntry(topic string, e redis.XMessage) (envelope, error) {
	seqText, _, _ := strings.Cut(e.ID, "-")
	seq, errSeq := strconv.ParseUint(seqText, 10, 64)
	data, okData := e.Values["d"].(string)
	nanosText, _ := e.Values["t"].(string)
	nanos, errTime := strconv.ParseInt(nanosText, 10, 64)
	epochText, _ := e.Values["e"].(string)
	epoch, errEpoch := strconv.ParseUint(epochText, 10, 64)
	if errSeq != nil || seq == 0 || !okData || errTime != nil || errEpoch != nil {
		return envelope{}, fmt.Errorf("%w: stream entry %s of %q", errBadPayload, e.ID, topic)
	}
	return envelope{clientmgr.Message{Topic: topic, Seq: seq, Data: []byte(data), Time: time.Unix(0, nanos)}, epoch}, nil
}
