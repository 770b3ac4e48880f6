package proxytest_test

import (
	"net/http"
	"net/http/cookiejar"
	"slices"
	"testing"
	"time"
)

// Through haproxy serving plain HTTP (where TLS ends in front of it, or on
// a private network), each server-sent event arrives about 200 ms late
// unless the configuration has option http-no-delay: haproxy holds a
// response's data back while it expects more, as it does for every
// stream. (Over TLS, haproxy 2.6 writes each record at once either way.)
func TestHAProxyNoDelay(t *testing.T) {
	plain := []string{"    http-request redirect scheme https code 301 unless { ssl_fc }\n", ""}
	with := eventDelay(t, plain...)
	without := eventDelay(t, append(plain, "    option http-no-delay\n", "")...)
	t.Logf("median time from a post to its event through haproxy: %v with http-no-delay, %v without", with, without)
	if without < 100*time.Millisecond {
		t.Fatalf("without http-no-delay an event took %v: this haproxy does not hold events back, and the test cannot show what the option does", without)
	}
	if with > without/4 {
		t.Errorf("with http-no-delay an event took %v, not much less than the %v it takes without", with, without)
	}
}

// eventDelay runs haproxy with its documented configuration and edits,
// and returns the median time from posting a message straight to a node
// to its event arriving on a stream through haproxy's plain HTTP port.
func eventDelay(t *testing.T, edits ...string) time.Duration {
	t.Helper()
	haproxy := proxyKind{"haproxy", startHAProxy}
	s, a, _ := startChat(t, haproxy.with(edits...), "-post-rate", "100")
	jar, _ := cookiejar.New(nil)
	direct := &client{t: t, base: "http://" + a.addr, hc: &http.Client{Jar: jar}}
	cursor := direct.join("latency", "publisher")
	events := (&client{t: t, base: s.plain, hc: &http.Client{}}).stream("latency", cursor)
	time.Sleep(100 * time.Millisecond) // until the stream waits on its node
	var delays []time.Duration
	for range 9 {
		start := time.Now()
		if err := direct.publish("latency", "ping"); err != nil {
			t.Fatalf("publish: %v", err)
		}
		_, at := nextMessage(t, events)
		delays = append(delays, at.Sub(start))
		time.Sleep(250 * time.Millisecond) // the next post is not "more data" of this one
	}
	slices.Sort(delays)
	return delays[len(delays)/2]
}
