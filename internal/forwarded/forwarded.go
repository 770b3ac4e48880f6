// Package forwarded finds the client behind trusted proxies: the address a
// request's limits count it under, from X-Forwarded-For as only a proxy
// the server trusts may write it. Anyone else's X-Forwarded-For is
// ignored, since any client can send one.
//
//	trusted := forwarded.Trusted{netip.MustParsePrefix("10.0.0.0/8")}
//	addr := trusted.Client(r) // the peer, or the client its proxies name
package forwarded

import (
	"net/http"
	"net/netip"
	"strings"
)

// Trusted is the set of proxies whose X-Forwarded-For is believed.
type Trusted []netip.Prefix

// Contains reports whether a is a trusted proxy's address.
func (t Trusted) Contains(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Client returns the address of the client behind r: the connection's
// peer, unless the peer is a trusted proxy; then, walking X-Forwarded-For
// from its last entry (the one the peer added), the first address that is
// not a trusted proxy. Entries further left were written by whoever sent
// the request to the first trusted proxy, and are not believed; an entry
// that is not an address stops the walk at the proxy that wrote it. It is
// the zero Addr when the peer's address cannot be read.
func (t Trusted) Client(r *http.Request) netip.Addr {
	addr := Peer(r)
	if !t.Contains(addr) {
		return addr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0 && t.Contains(addr); i-- {
		hop, ok := parseHop(hops[i])
		if !ok {
			break
		}
		addr = hop
	}
	return addr
}

// Peer is the address of the other end of r's connection, or the zero
// Addr when RemoteAddr is not an address and port (a Unix socket, a
// test's recorder).
func Peer(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// parseHop reads one X-Forwarded-For entry: an address, or one with a port
// ("192.0.2.1:4711", "[2001:db8::1]:443"), as some proxies write it.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
