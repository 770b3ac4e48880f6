package hub

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/cometkit/cometkit/internal/forwarded"
)

// An Authorizer decides who may use the hub. Authorize is called once for
// each connection, with the request that opens it: a WebSocket's
// handshake, an event stream's GET, each long-poll's POST. It may read the
// request's cookies, headers and query (EventSource can send no header, so
// a token in the query is how a page authorizes a stream it cannot give a
// cookie), but not its body. It returns what the client may do, or an
// error to refuse the connection: 403, or on a WebSocket the close code
// 4403, with the error frame forbidden. The error's text is not sent.
//
// Authorize and the Access it returns are called concurrently, from the
// goroutines serving the clients.
type Authorizer interface {
	Authorize(r *http.Request) (Access, error)
}

// AuthorizerFunc makes a function an Authorizer.
type AuthorizerFunc func(r *http.Request) (Access, error)

// Authorize calls f(r).
func (f AuthorizerFunc) Authorize(r *http.Request) (Access, error) { return f(r) }

// Access is what one connection's client may do, as its Authorizer decided
// when it connected: a signed token's claims, say, read once.
type Access interface {
	// Identity names the client for WithPublishRate: a user id, so that
	// the rate holds across all of the user's connections. "" counts the
	// client by its address.
	Identity() string
	// CanSubscribe reports whether the client may receive topic's
	// messages; if not, its subscribe gets the error forbidden.
	CanSubscribe(topic string) bool
	// CanPublish reports whether the client may publish on topic; if not,
	// its publish gets the error forbidden.
	CanPublish(topic string) bool
}

// Grant is an Access made of fields, for an Authorizer that needs no type
// of its own. Its zero value may subscribe to every topic and publish on
// none, which is what a hub without an Authorizer allows.
type Grant struct {
	ID        string                  // the Identity
	Subscribe func(topic string) bool // nil allows every topic
	Publish   func(topic string) bool // nil allows none
}

// Identity returns g.ID.
func (g Grant) Identity() string { return g.ID }

// CanSubscribe calls g.Subscribe, or allows every topic if it is nil.
func (g Grant) CanSubscribe(topic string) bool { return g.Subscribe == nil || g.Subscribe(topic) }

// CanPublish calls g.Publish, or allows no topic if it is nil.
func (g Grant) CanPublish(topic string) bool { return g.Publish != nil && g.Publish(topic) }

// subscribeOnly is the Authorizer of a hub given none.
var subscribeOnly = AuthorizerFunc(func(*http.Request) (Access, error) { return Grant{}, nil })

// A PublishHook sees the data of a publish that the Authorizer allowed,
// before it is broadcast, and returns the data to broadcast (the same, or
// changed: trimmed, escaped, wrapped with the sender's name), or an error
// to refuse it. A refused publish gets the error frame rejected, whose
// message is the error's text: write it for the client. The hook runs on
// the goroutine serving the client; ctx ends with the client's connection.
type PublishHook func(ctx context.Context, a Access, topic string, data []byte) ([]byte, error)

// clientAddr returns the address a request is counted under: the
// connection's, or, from a trusted proxy, the rightmost address of
// X-Forwarded-For that is not a trusted proxy. It is the zero Addr when
// the connection's address cannot be read (a test's recorder).
func (h *Hub) clientAddr(r *http.Request) netip.Addr {
	return forwarded.Trusted(h.cfg.trustedProxies).Client(r)
}

// addrKey is what connections are counted by: an IPv4 address, or the /64
// of an IPv6 one.
func addrKey(a netip.Addr) netip.Prefix {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// originAllowed reports whether a browser request comes from a page the hub
// serves: no Origin header (not a browser), the request's own host, or an
// origin given to WithOrigins.
func (h *Hub) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // "null" among others: a sandboxed or opaque origin
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return slices.Contains(h.cfg.origins, strings.ToLower(u.Scheme+"://"+u.Host))
}

// addrCounter counts the connections open from each address.
type addrCounter struct {
	limit int
	mu    sync.Mutex
	open  map[netip.Prefix]int
}

// acquire counts one more connection from a, unless a already has limit.
func (ac *addrCounter) acquire(a netip.Addr) bool {
	k := addrKey(a)
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.open[k] >= ac.limit {
		return false
	}
	ac.open[k]++
	return true
}

func (ac *addrCounter) release(a netip.Addr) {
	k := addrKey(a)
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.open[k]--; ac.open[k] <= 0 {
		delete(ac.open, k)
	}
}

// publishLimits holds a token bucket per client that has published. A
// bucket that has filled up again is the same as a new one, so the sweep
// that runs as the map grows drops those: the map holds the clients that
// published lately, no more.
type publishLimits struct {
	rate      rate.Limit
	burst     int
	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	nextSweep int
}

func newPublishLimits(perSecond float64, burst int) *publishLimits {
	return &publishLimits{rate: rate.Limit(perSecond), burst: burst, buckets: map[string]*rate.Limiter{}, nextSweep: 1024}
}

// allow takes a token from the client's bucket, or reports how long until
// one is there.
func (pl *publishLimits) allow(client string, now time.Time) (ok bool, wait time.Duration) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	b := pl.buckets[client]
	if b == nil {
		if len(pl.buckets) >= pl.nextSweep {
			pl.sweepLocked(now)
		}
		b = rate.NewLimiter(pl.rate, pl.burst)
		pl.buckets[client] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (pl *publishLimits) sweepLocked(now time.Time) {
	for k, b := range pl.buckets {
		if b.TokensAt(now) >= float64(pl.burst) {
			delete(pl.buckets, k)
		}
	}
	pl.nextSweep = max(1024, 2*len(pl.buckets))
}

// clientKey names a client for the publish rate: its identity, or its
// address.
func clientKey(a Access, addr netip.Addr) string {
	if id := a.Identity(); id != "" {
		return "id:" + id
	}
	return "addr:" + addrKey(addr).String()
}
