package forwarded_test

import (
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cometkit/cometkit/internal/forwarded"
)

func TestClient(t *testing.T) {
	trusted := forwarded.Trusted{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tt := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy: the peer", "192.0.2.1:1000", nil, "192.0.2.1"},
		{"an untrusted peer's header is anyone's", "192.0.2.1:1000", []string{"203.0.113.7"}, "192.0.2.1"},
		{"through a trusted proxy", "10.0.0.1:1000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"entries left of the first untrusted hop are not believed", "10.0.0.1:1000", []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7"},
		{"trusted hops are walked past", "10.0.0.1:1000", []string{"203.0.113.7, 10.0.0.2"}, "203.0.113.7"},
		{"several headers are one list", "10.0.0.1:1000", []string{"203.0.113.7", "10.0.0.2"}, "203.0.113.7"},
		{"an entry with a port", "10.0.0.1:1000", []string{"203.0.113.7:4711"}, "203.0.113.7"},
		{"IPv6 with a port", "[::1]:1000", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"a mapped IPv4", "10.0.0.1:1000", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"junk stops at the proxy that wrote it", "10.0.0.1:1000", []string{"203.0.113.7, junk"}, "10.0.0.1"},
		{"nothing forwarded: the proxy", "10.0.0.1:1000", nil, "10.0.0.1"},
		{"an unreadable peer", "@", []string{"203.0.113.7"}, "invalid IP"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			assert.Equal(t, tt.want, trusted.Client(r).String())
		})
	}
}
