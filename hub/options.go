package hub

import (
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/internal/argcheck"
)

// Defaults used by New: what a Hub does when the option that sets each
// value is not passed.
const (
	DefaultMaxTopics       = 100              // subscriptions one connection may hold
	DefaultMaxMessageSize  = 64 << 10         // bytes a client sends at once: a WebSocket message, a long-poll body
	DefaultPublishRate     = 5                // publishes per second per client, on average
	DefaultPublishBurst    = 10               // publishes a client may send at once
	DefaultMaxConnsPerAddr = 100              // connections from one address (an IPv6 /64), all transports
	DefaultSendQueue       = 256 << 10        // bytes of frames waiting for one WebSocket
	DefaultWriteTimeout    = 10 * time.Second // for one frame, one SSE write or one poll answer to leave
	DefaultPingInterval    = 25 * time.Second // between pings on a WebSocket or an event stream
	DefaultPingTimeout     = 10 * time.Second // for a WebSocket's pong
	DefaultPollTimeout     = 25 * time.Second // a long-poll with nothing to say answers after this
)

// An Option configures a Hub. An option's argument means what it says, and
// a default is what you get by not passing the option: a value that cannot
// be meant (a size or rate below 1, a duration of 0 or less, a nil
// dispatcher, authorizer, hook, registry or logger, a malformed origin or
// proxy prefix) makes New panic with a message naming the option.
type Option func(*config)

type config struct {
	dispatcher      *continuation.Dispatcher
	middleware      []func(http.Handler) http.Handler
	authorizer      Authorizer
	publishHook     PublishHook
	origins         []string // "scheme://host[:port]", lower case
	trustedProxies  []netip.Prefix
	maxTopics       int
	maxMessageSize  int
	publishRate     float64
	publishBurst    int
	maxConnsPerAddr int
	sendQueue       int
	writeTimeout    time.Duration
	pingInterval    time.Duration
	pingTimeout     time.Duration
	pollTimeout     time.Duration
	registerer      prometheus.Registerer
	logger          *slog.Logger
}

func newConfig(opts []Option) config {
	cfg := config{
		authorizer:      subscribeOnly,
		maxTopics:       DefaultMaxTopics,
		maxMessageSize:  DefaultMaxMessageSize,
		publishRate:     DefaultPublishRate,
		publishBurst:    DefaultPublishBurst,
		maxConnsPerAddr: DefaultMaxConnsPerAddr,
		sendQueue:       DefaultSendQueue,
		writeTimeout:    DefaultWriteTimeout,
		pingInterval:    DefaultPingInterval,
		pingTimeout:     DefaultPingTimeout,
		pollTimeout:     DefaultPollTimeout,
		logger:          slog.Default(),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// check rejects an argument that cannot be meant, naming the option.
const check = argcheck.Package("hub")

// forDefault is why the options that take a value to use instead of a
// default reject nil.
const forDefault = "leave the option out for the default"

// WithDispatcher serves the hub's requests (every long-poll, every event
// stream, every WebSocket handshake) through d, so that they share d's pool
// and limits with the application's other handlers. Without it the hub
// makes a Dispatcher of its own with continuation's defaults. Either way
// the hub's Drain drains that Dispatcher: a Dispatcher serves one server,
// and a hub shuts down with it.
func WithDispatcher(d *continuation.Dispatcher) Option {
	return func(c *config) {
		check.That(d != nil, "WithDispatcher", d, forDefault)
		c.dispatcher = d
	}
}

// WithMiddleware wraps what the hub runs in each dispatch of a request
// (every long-poll, event stream and WebSocket handshake), inside its
// Dispatcher, in the order given: middleware that must see a request's end
// after all its waits (a log, middleware.RequestMetrics), since one placed
// in front of the hub sees a waiting request leave as soon as it detaches
// from net/http.
func WithMiddleware(mw ...func(http.Handler) http.Handler) Option {
	return func(c *config) {
		for _, m := range mw {
			check.That(m != nil, "WithMiddleware", m, forDefault)
		}
		c.middleware = append(c.middleware, mw...)
	}
}

// WithAuthorizer sets what decides who may connect, subscribe and publish.
// Without it every client may connect and subscribe to any topic, and no
// client may publish.
func WithAuthorizer(a Authorizer) Option {
	return func(c *config) {
		check.That(a != nil, "WithAuthorizer", a, forDefault)
		c.authorizer = a
	}
}

// WithPublishHook sets a function that sees, and may change or refuse, the
// data of every publish the Authorizer allowed. Without it the data is
// published as the client sent it.
func WithPublishHook(f PublishHook) Option {
	return func(c *config) {
		check.That(f != nil, "WithPublishHook", f, forDefault)
		c.publishHook = f
	}
}

// WithOrigins allows pages from these origins ("https://app.example.com")
// to connect, besides the hub's own. A browser request whose Origin is
// neither is refused with 403, on every transport: without the check any
// site a user visits could open a WebSocket, or post a long-poll, with the
// user's cookies. Requests without an Origin header (programs, not
// browsers) are not checked. Without this option only same-origin pages
// may connect.
func WithOrigins(origins ...string) Option {
	return func(c *config) {
		for _, o := range origins {
			u, err := url.Parse(o)
			check.That(err == nil && u.Scheme != "" && u.Host != "" && (u.Path == "" || u.Path == "/"),
				"WithOrigins", o, "an origin is scheme://host[:port]")
			c.origins = append(c.origins, strings.ToLower(u.Scheme+"://"+u.Host))
		}
	}
}

// WithTrustedProxies names the proxies whose X-Forwarded-For header the
// hub believes. A request from one of these prefixes is counted, for
// WithMaxConnsPerAddr and the default publish rate, under the rightmost
// address in X-Forwarded-For that is not itself a trusted proxy. Without
// this option the address is the connection's own, and the header is
// ignored: anyone may send it.
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return func(c *config) {
		for _, p := range prefixes {
			check.That(p.IsValid(), "WithTrustedProxies", p, "not a valid prefix")
			c.trustedProxies = append(c.trustedProxies, p.Masked())
		}
	}
}

// WithMaxTopics caps the subscriptions of one connection: one WebSocket,
// one event stream, one long-poll (default DefaultMaxTopics). A subscribe
// beyond it gets the error too_many_topics; an event stream that names
// more topics is refused with 400.
func WithMaxTopics(n int) Option {
	return func(c *config) { c.maxTopics = check.AtLeastOne("WithMaxTopics", n) }
}

// WithMaxMessageSize caps what a client sends at once, in bytes: one
// WebSocket message (a larger one closes the connection with 1009), one
// long-poll body (a larger one is answered 413). The data a client
// publishes is smaller still, and the Manager's WithMaxMessageSize applies
// to it too (default DefaultMaxMessageSize).
func WithMaxMessageSize(n int) Option {
	return func(c *config) { c.maxMessageSize = check.AtLeastOne("WithMaxMessageSize", n) }
}

// WithPublishRate sets how often one client may publish: perSecond on
// average, burst at once (defaults DefaultPublishRate and
// DefaultPublishBurst). A client is what its Access's Identity names, all
// its connections together, or, when that is "", its address. A publish
// beyond the rate gets the error rate_limited, with the time to wait.
func WithPublishRate(perSecond float64, burst int) Option {
	return func(c *config) {
		args := argcheck.Args{perSecond, burst}
		check.That(perSecond > 0, "WithPublishRate", args, "the rate must be more than 0")
		check.That(burst >= 1, "WithPublishRate", args, "the burst must be at least 1")
		c.publishRate, c.publishBurst = perSecond, burst
	}
}

// WithMaxConnsPerAddr caps the connections open at once from one address,
// all transports together: WebSockets, event streams, and long-polls in
// progress (default DefaultMaxConnsPerAddr). IPv6 addresses count by their
// /64, which one client usually holds whole. Offices and mobile carriers put
// many users behind one address: raise it for them.
func WithMaxConnsPerAddr(n int) Option {
	return func(c *config) { c.maxConnsPerAddr = check.AtLeastOne("WithMaxConnsPerAddr", n) }
}

// WithSendQueue caps the bytes of frames waiting to be written to one
// WebSocket (default DefaultSendQueue); one frame larger than the cap is
// still sent when nothing else waits. A connection whose queue would grow
// beyond it is a slow consumer: it is closed with 4008, and its client
// resumes from its cursors on a new connection. It also caps the messages
// in one long-poll answer and in one write of an event stream, which the
// hub holds whole while a worker writes them: what is beyond waits in the
// history, for the client's next poll, or the stream's next write.
func WithSendQueue(bytes int) Option {
	return func(c *config) { c.sendQueue = check.AtLeastOne("WithSendQueue", bytes) }
}

// WithWriteTimeout bounds each write to a client: one WebSocket frame, one
// batch of server-sent events, one long-poll's answer (default
// DefaultWriteTimeout). A client that takes nothing for that long is a
// slow consumer, and its connection is closed; until then it holds the
// Dispatcher's worker that writes to it.
func WithWriteTimeout(d time.Duration) Option {
	return func(c *config) { c.writeTimeout = check.Positive("WithWriteTimeout", d) }
}

// WithPingInterval sets how often the hub pings a WebSocket (a ping control
// frame and a ping frame of the wire format) and an event stream (a ping
// event), so that proxies see traffic and clients can tell a live
// connection from a dead one (default DefaultPingInterval).
func WithPingInterval(d time.Duration) Option {
	return func(c *config) { c.pingInterval = check.Positive("WithPingInterval", d) }
}

// WithPingTimeout sets how long a WebSocket client has to answer a ping
// control frame with its pong; one that does not is closed with 4000
// (default DefaultPingTimeout). Browsers answer pings by themselves.
func WithPingTimeout(d time.Duration) Option {
	return func(c *config) { c.pingTimeout = check.Positive("WithPingTimeout", d) }
}

// WithPollTimeout sets how long a long-poll waits for something to say
// before it answers with no frames, and the client polls again (default
// DefaultPollTimeout: below the 30 s at which many proxies give up).
func WithPollTimeout(d time.Duration) Option {
	return func(c *config) { c.pollTimeout = check.Positive("WithPollTimeout", d) }
}

// WithMetrics registers the hub's metrics on reg and on no other registry.
// Hubs sharing a registry share the collectors.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *config) {
		check.That(reg != nil, "WithMetrics", reg, forDefault)
		c.registerer = reg
	}
}

// WithLogger sets the logger for panics in the application's hooks and for
// failures no client can be told about (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		check.That(l != nil, "WithLogger", l, forDefault)
		c.logger = l
	}
}
