package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/internal/sleep"
)

// Every script takes a topic's KEYS in the order of topicKeys: its
// sequence (the Seq of its newest message), its stream (the history, one
// entry per message with the Seq as ID and fields t, e and d: time in Unix
// nanoseconds, epoch, data) and its epoch.
//
// Epochs are decimal text in the scripts: they are nanoseconds since 1970,
// beyond the integers Lua's numbers hold exactly, so they are compared as
// text (later) and counted up by INCR, which Redis does in 64 bits.
const epochFunctions = `
local function later(a, b)
	if #a ~= #b then return #a > #b end
	return a > b
end

-- startEpoch gives the topic a new epoch: now (the caller's clock) unless
-- that is not later than floor, then floor + 1; so a topic's epochs only
-- grow, whatever the nodes' clocks. The old sequence's stream goes with
-- it, and the sequence starts again. With a channel, the new epoch is
-- announced on it ("0 <time> <epoch> <len(topic)> <topic>": Seq 0, no
-- data), so that every node wakes the clients waiting in the old one
-- without waiting for a message of the new one.
local function startEpoch(now, floor, channel, topic)
	if floor and not later(now, floor) then
		redis.call('SET', KEYS[3], floor)
		redis.call('INCR', KEYS[3])
	else
		redis.call('SET', KEYS[3], now)
	end
	redis.call('DEL', KEYS[2])
	redis.call('SET', KEYS[1], 0)
	local epoch = redis.call('GET', KEYS[3])
	if channel then
		redis.call('PUBLISH', channel, string.format('0 %s %s %d ', now, epoch, #topic) .. topic)
	end
	return epoch
end
`

// publishScript gives a message its epoch and Seq, appends it to the
// topic's stream and publishes it on the channel, atomically.
//
// A new epoch starts when the topic has none (a new topic, or one whose
// keys Redis lost), and when the publishing node has seen, in the current
// epoch, a Seq beyond Redis's: Redis lost acknowledged writes (an AOF
// without its last second, an older snapshot), and handing out those Seqs
// again would give the nodes' clients other messages under Seqs they have
// seen. The new epoch is later than both the old one and the one the node
// saw.
//
// ARGV: the channel, the history size, the time in Unix nanoseconds, the
// topic, the data, and the node's position: its epoch ("0": none) and Seq.
// Returns {seq, epoch, why}: why is 0 when the sequence went on, 1 for a
// new topic, 2 when Redis had lost data.
var publishScript = redis.NewScript(epochFunctions + `
local epoch = redis.call('GET', KEYS[3])
local last = redis.call('GET', KEYS[1])
local why = 0
if not epoch or not last then
	why = 1
	if ARGV[6] ~= '0' then why = 2 end
elseif ARGV[6] == epoch and tonumber(ARGV[7]) > tonumber(last) then
	why = 2
end
if why ~= 0 then
	local floor = epoch
	if ARGV[6] ~= '0' and (not floor or later(ARGV[6], floor)) then floor = ARGV[6] end
	epoch = startEpoch(ARGV[3], floor)
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq), 't', ARGV[3], 'e', epoch, 'd', ARGV[5])
redis.call('PUBLISH', ARGV[1], string.format('%d %s %s %d ', seq, ARGV[3], epoch, #ARGV[4]) .. ARGV[4] .. ARGV[5])
return {seq, epoch, why}
`)

// rewindScript starts a new epoch for a topic whose sequence went back
// within its epoch, if the epoch is still that one (ARGV[1]): every node
// that noticed reports it, and the first report does it. ARGV[2] is the
// time in Unix nanoseconds, ARGV[3] the channel, ARGV[4] the topic.
// Returns 1 if it started the epoch.
var rewindScript = redis.NewScript(epochFunctions + `
local epoch = redis.call('GET', KEYS[3])
if epoch ~= ARGV[1] then return 0 end
startEpoch(ARGV[2], epoch, ARGV[3], ARGV[4])
return 1
`)

// historyScript reads the topic's epoch and last Seq and the stream's
// entries after the cursor (ARGV[1] epoch, "0" for none; ARGV[2] Seq) if
// it is a position of the current epoch, else the newest entries: the
// newest ARGV[3] of them at most, and, when ARGV[4] is not 0, only as many
// of the newest as hold ARGV[4] bytes of data (at least one). First, if
// the asking node has seen (ARGV[5] epoch, ARGV[6] Seq) more of the current
// epoch than Redis has, Redis lost data: the topic starts a new epoch
// (ARGV[7] is the time in Unix nanoseconds, ARGV[8] the channel, ARGV[9]
// the topic), as a rewind does. Returns {}
// for a topic with no epoch, else {epoch, seq, 1 if it started the epoch
// else 0, then id, time, epoch, data of each entry, oldest first}; a field
// an entry lacks is nil.
var historyScript = redis.NewScript(epochFunctions + `
local epoch = redis.call('GET', KEYS[3])
if not epoch then return {} end
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local started = 0
if ARGV[5] == epoch and tonumber(ARGV[6]) > last then
	epoch, last, started = startEpoch(ARGV[7], epoch, ARGV[8], ARGV[9]), 0, 1
end
local after = tonumber(ARGV[2])
local from = '-'
if (ARGV[1] == '0' or ARGV[1] == epoch) and after <= last then
	from = string.format('%d-0', after + 1)
end
local entries = redis.call('XREVRANGE', KEYS[2], '+', from, 'COUNT', ARGV[3])
local budget, size, kept = tonumber(ARGV[4]), 0, {}
for i = 1, #entries do
	local fields, t, e, d = entries[i][2], false, false, false
	for j = 1, #fields, 2 do
		local name, value = fields[j], fields[j + 1]
		if name == 't' then t = value elseif name == 'e' then e = value elseif name == 'd' then d = value end
	end
	size = size + (d and #d or 0)
	if budget > 0 and size > budget and i > 1 then break end
	kept[i] = {entries[i][1], t, e, d}
end
local out = {epoch, last, started}
for i = #kept, 1, -1 do
	for j = 1, 4 do table.insert(out, kept[i][j]) end
end
return out
`)

// dataLost is publishScript's why when Redis had lost data.
const dataLost = 2

// Publish appends data to topic in one script: the topic's epoch (a new
// one for a new topic, or when Redis is behind seen in seen's epoch), its
// next Seq, the entry in the topic's stream, trimmed to about the history
// size, and the message on the channel, which brings it to every node,
// this one too, in order. Without a deadline on ctx, the publish timeout
// applies.
func (b *Broker) Publish(ctx context.Context, topic string, data []byte, seen clientmgr.Cursor) (clientmgr.Message, error) {
	if b.ctx.Err() != nil {
		return clientmgr.Message{}, ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.publishTimeout)
		defer cancel()
	}
	now := time.Now().UnixNano()
	reply, err := publishScript.Run(ctx, b.rdb, b.topicKeys(topic),
		b.channel, b.history, now, topic, data, seen.Epoch, seen.Seq).Slice()
	var seq, epoch uint64
	var why int64
	if err == nil {
		seq, epoch, why, err = parsePublishReply(reply)
	}
	if err != nil {
		b.metrics.errors.WithLabelValues("publish").Inc()
		return clientmgr.Message{}, fmt.Errorf("redisbroker: publish on %q: %w", topic, err)
	}
	if why == dataLost {
		b.lostData(topic, seen, epoch)
	}
	return clientmgr.Message{Topic: topic, Epoch: epoch, Seq: seq, Data: data, Time: time.Unix(0, now)}, nil
}

// lostData reports a new epoch started because Redis was behind what this
// node had seen of the topic.
func (b *Broker) lostData(topic string, seen clientmgr.Cursor, epoch uint64) {
	b.metrics.lossEpochs.Inc()
	b.cfg.logger.Warn("redisbroker: Redis had lost messages of the topic that this node had seen; the topic starts a new epoch",
		"topic", topic, "seen", seen.String(), "epoch", strconv.FormatUint(epoch, 10))
}

func parsePublishReply(reply []any) (seq, epoch uint64, why int64, err error) {
	if len(reply) == 3 {
		n, okSeq := reply[0].(int64)
		e, errEpoch := parseEpoch(reply[1])
		w, okWhy := reply[2].(int64)
		if okSeq && n > 0 && errEpoch == nil && okWhy {
			return uint64(n), e, w, nil
		}
	}
	return 0, 0, 0, fmt.Errorf("%w: script reply %v", errBadPayload, reply)
}

// History reads, in one script, the topic's epoch and last Seq and the
// stream's entries after the cursor when it is a position of the current
// epoch (or has no epoch), else the newest: at most the history size (and
// BrokerConfig.HistoryBytes of data, if set), the newest ones, oldest
// first. It returns what the stream holds, trimmed or
// not; the Manager decides whether that honours the cursor. An entry it
// cannot read ends the messages there.
func (b *Broker) History(ctx context.Context, topic string, after, seen clientmgr.Cursor) ([]clientmgr.Message, clientmgr.Cursor, error) {
	if b.ctx.Err() != nil {
		return nil, clientmgr.Cursor{}, ErrClosed
	}
	reply, err := historyScript.Run(ctx, b.rdb, b.topicKeys(topic), after.Epoch, after.Seq, b.history, b.historyBytes,
		seen.Epoch, seen.Seq, time.Now().UnixNano(), b.channel, topic).Slice()
	if err != nil {
		b.metrics.errors.WithLabelValues("history").Inc()
		return nil, clientmgr.Cursor{}, fmt.Errorf("redisbroker: history of %q: %w", topic, err)
	}
	if len(reply) == 0 {
		return nil, clientmgr.Cursor{}, nil // no sequence
	}
	head, err := parseHead(reply[0], reply[1])
	started, _ := reply[2].(int64)
	if err != nil || len(reply)%4 != 3 {
		b.metrics.errors.WithLabelValues("history").Inc()
		return nil, clientmgr.Cursor{}, fmt.Errorf("redisbroker: history of %q: %w: script reply of %d values", topic, errBadPayload, len(reply))
	}
	if started == 1 {
		b.lostData(topic, seen, head.Epoch)
	}
	entries := reply[3:]
	msgs := make([]clientmgr.Message, 0, len(entries)/4)
	for i := 0; i < len(entries); i += 4 {
		msg, err := fromEntry(topic, entries[i], entries[i+1], entries[i+2], entries[i+3])
		if err != nil {
			// Not skipped: the messages after it would follow a hole. The
			// Manager sees the history end early.
			b.metrics.errors.WithLabelValues("decode").Inc()
			b.cfg.logger.Error("redisbroker: a stream entry cannot be read", "err", err)
			break
		}
		msgs = append(msgs, msg)
	}
	return msgs, head, nil
}

// Head reads the topic's epoch and last Seq, in one command (the keys
// share a slot).
func (b *Broker) Head(ctx context.Context, topic string) (clientmgr.Cursor, error) {
	if b.ctx.Err() != nil {
		return clientmgr.Cursor{}, ErrClosed
	}
	keys := b.topicKeys(topic)
	vals, err := b.rdb.MGet(ctx, keys[2], keys[0]).Result()
	if err == nil && vals[0] == nil {
		return clientmgr.Cursor{}, nil // no sequence
	}
	var head clientmgr.Cursor
	if err == nil {
		if vals[1] == nil {
			vals[1] = "0"
		}
		head, err = parseHead(vals[0], vals[1])
	}
	if err != nil {
		b.metrics.errors.WithLabelValues("head").Inc()
		return clientmgr.Cursor{}, fmt.Errorf("redisbroker: head of %q: %w", topic, err)
	}
	return head, nil
}

// parseHead reads an epoch (text) and a Seq (an integer, or its text).
func parseHead(epoch, seq any) (clientmgr.Cursor, error) {
	e, err := parseEpoch(epoch)
	if err != nil {
		return clientmgr.Cursor{}, err
	}
	switch s := seq.(type) {
	case int64:
		if s >= 0 {
			return clientmgr.Cursor{Epoch: e, Seq: uint64(s)}, nil
		}
	case string:
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return clientmgr.Cursor{Epoch: e, Seq: n}, nil
		}
	}
	return clientmgr.Cursor{}, fmt.Errorf("%w: Seq %v", errBadPayload, seq)
}

func parseEpoch(v any) (uint64, error) {
	s, _ := v.(string)
	e, err := strconv.ParseUint(s, 10, 64)
	if err != nil || e == 0 {
		return 0, fmt.Errorf("%w: epoch %v", errBadPayload, v)
	}
	return e, nil
}

// startNewEpoch starts a new epoch for a topic whose sequence went back
// in broken, as the node reported (clientmgr.ErrSequenceRewound), unless
// another node did first. It tries until it succeeds or the broker
// closes: while the broken epoch stands, a cursor of it may be taken at
// face value. It runs on the receiving goroutine.
func (b *Broker) startNewEpoch(topic string, broken uint64) {
	for backoff := retryMin; ; backoff = min(2*backoff, retryMax) {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.publishTimeout)
		started, err := rewindScript.Run(ctx, b.rdb, b.topicKeys(topic), broken, time.Now().UnixNano(), b.channel, topic).Int()
		cancel()
		if err == nil {
			if started == 1 {
				b.metrics.lossEpochs.Inc()
			}
			return
		}
		if errors.Is(err, context.Canceled) && b.ctx.Err() != nil {
			return
		}
		b.metrics.errors.WithLabelValues("new-epoch").Inc()
		b.cfg.logger.Error("redisbroker: starting a new epoch for a topic whose sequence went back; trying again",
			"topic", topic, "err", err, "in", backoff)
		if !sleep.For(b.ctx, backoff) {
			return
		}
	}
}
