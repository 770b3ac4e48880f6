package redisbroker

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecode(t *testing.T) {
	msg, err := decode("42 1700000000000000000 7 4 roomhello world")
	require.NoError(t, err)
	assert.Equal(t, "room", msg.Topic)
	assert.Equal(t, uint64(42), msg.Seq)
	assert.Equal(t, uint64(7), msg.Epoch)
	assert.Equal(t, "hello world", string(msg.Data))
	assert.Equal(t, int64(1700000000000000000), msg.Time.UnixNano())

	msg, err = decode("1 5 7 2 a bdata with spaces ")
	require.NoError(t, err)
	assert.Equal(t, "a ", msg.Topic, "the topic is counted, not split on spaces")
	assert.Equal(t, "bdata with spaces ", string(msg.Data))

	for _, bad := range []string{"", "1 2 3", "x 1 1 1 t", "0 1 1 1 tdata", "1 1 0 1 t", "1 1 1 0 ", "1 1 1 9 short", "-1 1 1 1 t"} {
		_, err := decode(bad)
		assert.ErrorIs(t, err, errBadPayload, "%q", bad)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("42 1700000000000000000 7 4 roomhello")
	f.Add("1 1 1 1 t")
	f.Fuzz(func(t *testing.T, payload string) {
		msg, err := decode(payload)
		if err == nil && (msg.Seq == 0 || msg.Epoch == 0 || msg.Topic == "") {
			t.Fatalf("decoded %q into %+v", payload, msg)
		}
	})
}

// Topics without '%', '{' or '}' keep the key names of earlier versions;
// those with them are percent-encoded inside the hash tag, so that a
// topic's keys share one non-empty tag and two topics never share keys.
func TestTopicKeys(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{})
	defer rdb.Close()
	b := New(rdb)
	for topic, tag := range map[string]string{
		"room":     "{room}",
		"}room":    "{%7Droom}",
		"{room}":   "{%7Broom%7D}",
		"%7D":      "{%257D}",
		"a{b}c%":   "{a%7Bb%7Dc%25}",
		"ünï cödé": "{ünï cödé}",
	} {
		assert.Equal(t, []string{"cometkit:" + tag + ":seq", "cometkit:" + tag + ":log", "cometkit:" + tag + ":epoch"}, b.topicKeys(topic), topic)
	}
	assert.NotEqual(t, b.topicKeys("}"), b.topicKeys("%7D"))
	assert.Equal(t, []string{"app:{room}:seq", "app:{room}:log", "app:{room}:epoch"}, New(rdb, WithPrefix("app")).topicKeys("room"))
}
