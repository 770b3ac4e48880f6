package main

import (
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/cometkit/cometkit/internal/forwarded"
)

// burstOf is the burst allowed with a rate: three seconds' worth, at
// least one.
func burstOf(perSecond float64) int { return max(1, int(math.Ceil(3*perSecond))) }

// limiters are rate limits by key (a session, a client address): each key
// may do perSecond a second, in bursts of burstOf(perSecond). A key unused
// for a minute is forgotten; at most max keys are held, and a new key
// beyond that is refused, so that no stream of new keys grows memory.
type limiters struct {
	rate  rate.Limit
	burst int
	max   int

	mu    sync.Mutex
	byKey map[string]*limiter
}

type limiter struct {
	*rate.Limiter
	used time.Time
}

// maxLimiterKeys bounds the keys each kind of limit holds at once.
const maxLimiterKeys = 100_000

func newLimiters(perSecond float64) *limiters {
	return &limiters{rate: rate.Limit(perSecond), burst: burstOf(perSecond), max: maxLimiterKeys, byKey: make(map[string]*limiter)}
}

// allow takes one event of key's allowance, and reports whether there was
// one.
func (ls *limiters) allow(key string, now time.Time) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.byKey[key]
	if l == nil {
		if len(ls.byKey) >= ls.max {
			return false
		}
		l = &limiter{Limiter: rate.NewLimiter(ls.rate, ls.burst)}
		ls.byKey[key] = l
	}
	l.used = now
	return l.AllowN(now, 1)
}

// sweep forgets the keys unused since before cutoff.
func (ls *limiters) sweep(cutoff time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for key, l := range ls.byKey {
		if l.used.Before(cutoff) {
			delete(ls.byKey, key)
		}
	}
}

// proxies are the reverse proxies the operator trusts to say, in
// X-Forwarded-For, whom they forward for (-trusted-proxies). Nothing else
// a client sends is taken as its address: not X-Real-IP, not
// True-Client-IP, not X-Forwarded-For from anyone else.
type proxies []netip.Prefix

// parseProxies reads a comma-separated list of addresses and CIDR
// prefixes ("10.0.0.0/8, 127.0.0.1"); "" is none.
func parseProxies(s string) (proxies, error) {
	var ps proxies
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("chat: -trusted-proxies: %q is neither an address nor a CIDR prefix", f)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// client returns the address of the client behind r: the connection's
// peer, or the client that trusted proxies name in X-Forwarded-For, as the
// hub counts it.
func (ps proxies) client(r *http.Request) netip.Addr { return forwarded.Trusted(ps).Client(r) }

// secure reports whether the client reached us over HTTPS: directly, or
// through a trusted proxy that says so in X-Forwarded-Proto.
func (ps proxies) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return forwarded.Trusted(ps).Contains(forwarded.Peer(r)) && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// addrKey is the limit key of a client address: the address, or, for
// IPv6, its /64, which one client commonly has whole.
func addrKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
