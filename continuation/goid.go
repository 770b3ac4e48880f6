package continuation

import (
	"bytes"
	"runtime"
	"strconv"
)

// goroutineID returns the calling goroutine's id, parsed from the header
// line of runtime.Stack ("goroutine 18 [running]:").
//
// It serves one rule only: while OnTimeout listeners run, the expiry has
// already won the suspension, and Resume or Complete may come only from a
// listener (to steer the expiry) and must fail from anywhere else. Listeners
// run on the request's goroutine, so "from a listener" means "from that
// goroutine"; Go offers no other way to tell, and Jetty draws the same line
// by thread (jetty/jetty.project#6227). The cost, about a microsecond, is
// paid only by calls that land in that window and once per expiry that has
// listeners.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
