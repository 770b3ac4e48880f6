// Package respond writes a whole response within a deadline, for handlers
// that run on a continuation Dispatcher's bounded pool: a client that does
// not read would otherwise hold the worker writing to it for as long as it
// likes, and enough such clients would hold them all.
//
//	body, _ := json.Marshal(batch)
//	respond.Bounded(w, http.StatusOK, "application/json", body, 10*time.Second)
package respond

import (
	"net/http"
	"strconv"
	"time"
)

// Bounded writes body as the whole response, with its Content-Length, and
// flushes it, within timeout. When the client takes nothing for that long
// the write fails and the connection is closed. The deadline ends with the
// response: net/http clears a connection's write deadline once a response
// is done (and continuation does for a detached one), so that it cannot
// cut the connection's next request. Headers set on w before the call are
// sent with it.
func Bounded(w http.ResponseWriter, status int, contentType string, body []byte, timeout time.Duration) error {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(timeout)) // a writer without deadlines writes unbounded, as it would anyway
	w.WriteHeader(status)
	if _, err := w.Write(body); err != nil {
		return err
	}
	return rc.Flush()
}
