package redisbroker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
)

// A topic's keys share one hash tag, so that the scripts' keys are in one
// slot of a Redis Cluster: {prefix}:{topic}:seq, :log and :epoch. Inside
// the tag, '%', '{' and '}' are percent-encoded: a '}' in the topic would
// end the tag early (an empty tag for a topic that starts with one, and
// keys in different slots), and the encoding keeps two topics' keys apart.
var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// topicKeys returns the KEYS of the scripts: the topic's sequence, its
// stream and its epoch.
func (b *Broker) topicKeys(topic string) []string {
	tag := b.cfg.prefix + ":{" + tagEscaper.Replace(topic) + "}:"
	return []string{tag + "seq", tag + "log", tag + "epoch"}
}

var errBadPayload = errors.New("malformed message")

// decode parses a message published on the channel:
// "<seq> <time> <epoch> <len(topic)> <topic><data>". Seq 0, with no data,
// is the announcement of a new epoch (startEpoch).
func decode(payload string) (clientmgr.Message, error) {
	var fields [4]uint64
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
	seq, nanos, epoch, topicLen := fields[0], fields[1], fields[2], fields[3]
	if epoch == 0 || topicLen == 0 || topicLen > uint64(len(rest)) || (seq == 0 && topicLen != uint64(len(rest))) {
		return clientmgr.Message{}, errBadPayload
	}
	return clientmgr.Message{
		Topic: rest[:topicLen],
		Epoch: epoch,
		Seq:   seq,
		Data:  []byte(rest[topicLen:]),
		Time:  time.Unix(0, int64(nanos)),
	}, nil
}

// fromEntry makes a message of a stream entry as historyScript returns
// it: its ID ("<seq>-0") and its time, epoch and data fields.
func fromEntry(topic string, id, nanos, epoch, data any) (clientmgr.Message, error) {
	idText, _ := id.(string)
	seqText, _, _ := strings.Cut(idText, "-")
	seq, errSeq := strconv.ParseUint(seqText, 10, 64)
	nanosText, _ := nanos.(string)
	ns, errTime := strconv.ParseInt(nanosText, 10, 64)
	epochText, _ := epoch.(string)
	e, errEpoch := strconv.ParseUint(epochText, 10, 64)
	d, okData := data.(string)
	if errSeq != nil || seq == 0 || errTime != nil || errEpoch != nil || e == 0 || !okData {
		return clientmgr.Message{}, fmt.Errorf("%w: stream entry %v of %q", errBadPayload, id, topic)
	}
	return clientmgr.Message{Topic: topic, Epoch: e, Seq: seq, Data: []byte(d), Time: time.Unix(0, ns)}, nil
}
