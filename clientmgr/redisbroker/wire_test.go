package redisbroker

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecode(t *testing.T) {
	msg, err := decode("42 1700000000000000000 7 4 roomhello world")
	require.NoError(t, err)
	assert.Equal(t, "room", msg.Topic)
	assert.Equal(t, uint64(42), msg.Seq)
	assert.Equal(t, uint64(7), msg.epoch)
	assert.Equal(t, "hello world", string(msg.Data))
	assert.Equal(t, int64(1700000000000000000), msg.Time.UnixNano())

	msg, err = decode("1 5 7 2 a bdata with spaces ")
	require.NoError(t, err)
	assert.Equal(t, "a ", msg.Topic, "the topic is counted, not split on spaces")
	assert.Equal(t, "bdata with spaces ", string(msg.Data))

	for _, bad := range []string{"", "1 2 3", "x 1 1 1 t", "0 1 1 1 t", "1 1 1 0 ", "1 1 1 9 short", "-1 1 1 1 t"} {
		_, err := decode(bad)
		assert.ErrorIs(t, err, errBadPayload, "%q", bad)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("42 1700000000000000000 7 4 roomhello")
	f.Add("1 1 1 1 t")
	f.Fuzz(func(t *testing.T, payload string) {
		msg, err := decode(payload)
		if err == nil && (msg.Seq == 0 || msg.Topic == "") {
			t.Fatalf("decoded %q into %+v", payload, msg)
		}
	})
}
