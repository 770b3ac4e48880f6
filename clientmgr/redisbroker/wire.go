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
// newest ID, so Seq never goes back while history remains.
//
// KEYS: the topic's sequence key and stream. ARGV: the channel, the
// history size, the publish time in Unix nanoseconds, the topic, the data.
// The channel's payload is "<seq> <time> <len(topic)> <topic><data>".
var publishScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
	if #newest > 0 then
		redis.call('SET', KEYS[1], string.match(newest[1][1], '^(%d+)'))
	end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq), 't', ARGV[3], 'd', ARGV[5])
redis.call('PUBLISH', ARGV[1], string.format('%d %s %d ', seq, ARGV[3], #ARGV[4]) .. ARGV[4] .. ARGV[5])
return seq
`)

var errBadPayload = errors.New("malformed message")

// decode parses a message published by publishScript.
func decode(payload string) (clientmgr.Message, error) {
	var fields [3]uint64
	rest := payload
	for i := range fields {
		head, tail, ok := strings.Cut(rest, " ")
		if !ok {
			return clientmgr.Message{}, errBadPayload
		}
		n, err := strconv.ParseUint(head, 10, 64)
		if err != nil {
			return clientmgr.Message{}, errBadPayload
		}
		fields[i], rest = n, tail
	}
	seq, nanos, topicLen := fields[0], fields[1], fields[2]
	if seq == 0 || topicLen == 0 || topicLen > uint64(len(rest)) {
		return clientmgr.Message{}, errBadPayload
	}
	return clientmgr.Message{
		Topic: rest[:topicLen],
		Seq:   seq,
		Data:  []byte(rest[topicLen:]),
		Time:  time.Unix(0, int64(nanos)),
	}, nil
}

// fromEntry turns a stream entry into the message it holds.
func fromEntry(topic string, e redis.XMessage) (clientmgr.Message, error) {
	seqText, _, _ := strings.Cut(e.ID, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	data, okData := e.Values["d"].(string)
	nanosText, okTime := e.Values["t"].(string)
	nanos, errTime := strconv.ParseInt(nanosText, 10, 64)
	if err != nil || seq == 0 || !okData || !okTime || errTime != nil {
		return clientmgr.Message{}, fmt.Errorf("%w: stream entry %s of %q", errBadPayload, e.ID, topic)
	}
	return clientmgr.Message{Topic: topic, Seq: seq, Data: []byte(data), Time: time.Unix(0, nanos)}, nil
}
