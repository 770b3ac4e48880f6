package clientmgr_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
)

// A Message in JSON is what a browser reads: lower-case names, the epoch
// as text, the data as text when it is text.
func TestMessageJSON(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	text := clientmgr.Message{Topic: "room:lobby", Epoch: 36*36 + 1, Seq: 42, Data: []byte(`{"nick":"ann"}`), Time: at}
	b, err := json.Marshal(text)
	require.NoError(t, err)
	assert.JSONEq(t, `{"topic":"room:lobby","epoch":"101","seq":42,"time":"2026-12-01T10:00:00Z","data":"{\"nick\":\"ann\"}"}`, string(b))

	binary := clientmgr.Message{Topic: "t", Epoch: 1, Seq: 1, Data: []byte{0xff, 0, 1}, Time: at}
	b, err = json.Marshal(binary)
	require.NoError(t, err)
	assert.JSONEq(t, `{"topic":"t","epoch":"1","seq":1,"time":"2026-12-01T10:00:00Z","data":"/wAB","encoding":"base64"}`, string(b))

	for _, m := range []clientmgr.Message{text, binary} {
		b, err := json.Marshal(m)
		require.NoError(t, err)
		var back clientmgr.Message
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, m, back)
	}

	// <, > and &: escaped by json.Marshal, as it escapes every string; as
	// they are by an encoder told not to (a wire of JSON parsers only,
	// where "<" escaped is six bytes).
	angles := clientmgr.Message{Topic: "t", Epoch: 1, Seq: 1, Data: []byte("<b>&"), Time: at}
	b, err = json.Marshal(angles)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"data":"\u003cb\u003e\u0026"`)
	var raw bytes.Buffer
	enc := json.NewEncoder(&raw)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(angles))
	assert.Contains(t, raw.String(), `"data":"<b>&"`)

	var bad clientmgr.Message
	assert.Error(t, json.Unmarshal([]byte(`{"epoch":"!"}`), &bad))
	assert.Error(t, json.Unmarshal([]byte(`{"data":"x","encoding":"rot13"}`), &bad))
}

func TestBatchJSON(t *testing.T) {
	b, err := json.Marshal(clientmgr.Batch{Topic: "t", Complete: true, Next: clientmgr.Cursor{Epoch: 35, Seq: 5}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"topic":"t","messages":[],"complete":true,"next":"z-5"}`, string(b))
}

func TestCursorText(t *testing.T) {
	for _, c := range []clientmgr.Cursor{{}, {Seq: 7}, {Epoch: 1, Seq: 0}, {Epoch: 1 << 62, Seq: 1 << 40}} {
		back, err := clientmgr.ParseCursor(c.String())
		require.NoError(t, err, c.String())
		assert.Equal(t, c, back)
	}
	assert.Equal(t, "z-5", clientmgr.Cursor{Epoch: 35, Seq: 5}.String())
	for _, s := range []string{"-", "x", "1-", "-1", "0-1", "1-x", "1-2-3", "18446744073709551616"} {
		_, err := clientmgr.ParseCursor(s)
		assert.ErrorIs(t, err, clientmgr.ErrInvalidCursor, "%q", s)
	}
	b, err := json.Marshal(map[string]clientmgr.Cursor{"next": {Epoch: 35, Seq: 5}})
	require.NoError(t, err)
	assert.Equal(t, `{"next":"z-5"}`, string(b))
}

// Any text is a cursor or ErrInvalidCursor, never a panic; a cursor read
// back writes the same text.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "0", "42", "z-5", "mbk2z3q1xc-42", "-", "1-", "0-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := clientmgr.ParseCursor(s)
		if err != nil {
			return
		}
		again, err := clientmgr.ParseCursor(c.String())
		if err != nil || again != c {
			t.Fatalf("%q → %v → %q → %v, %v", s, c, c.String(), again, err)
		}
	})
}

// Epochs handed out in one process only grow, so no two sequences share
// one.
func TestNewEpochGrows(t *testing.T) {
	last := clientmgr.NewEpoch()
	for range 1000 {
		e := clientmgr.NewEpoch()
		require.Greater(t, e, last)
		last = e
	}
}
