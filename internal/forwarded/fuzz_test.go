package forwarded

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// FuzzClient: whatever X-Forwarded-For holds, the client is the peer (an
// untrusted one, or a trusted one whose header names nobody) or an address
// the header holds.
func FuzzClient(f *testing.F) {
	trusted := Trusted{netip.MustParsePrefix("127.0.0.0/8")}
	for _, v := range []string{"1.2.3.4", "1.2.3.4, 127.0.0.2", "", ",,,", "[::1]:80, x", "2001:db8::1", "::ffff:1.2.3.4"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-Forwarded-For", xff)
		r.RemoteAddr = "192.0.2.1:1"
		if got := trusted.Client(r); got.String() != "192.0.2.1" {
			t.Fatalf("untrusted peer with X-Forwarded-For %q: client %v", xff, got)
		}
		r.RemoteAddr = "127.0.0.1:1"
		got := trusted.Client(r)
		if got.String() == "127.0.0.1" {
			return
		}
		for _, hop := range strings.Split(xff, ",") {
			if a, ok := parseHop(hop); ok && a == got {
				return
			}
		}
		t.Fatalf("X-Forwarded-For %q gave client %v, not in it", xff, got)
	})
}
