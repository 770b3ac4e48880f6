package main

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/hub"
	"github.com/cometkit/cometkit/internal/respond"
	"github.com/cometkit/cometkit/middleware"
)

//go:embed static
var static embed.FS

// config is the chat server's settings (the command's flags).
type config struct {
	pollTimeout     time.Duration // a long-poll of the hub answers with nothing after this
	writeTimeout    time.Duration // one answer's writes: a client that does not read holds a worker until then
	presence        time.Duration // how often a page renews its nick's presence; three missed and it has left
	history         int           // events kept per room
	historyBytes    int           // and bytes
	maxRooms        int           // rooms this node holds at once
	postRate        float64       // messages a second per session
	roomRate        float64       // events a second per room
	joinRate        float64       // joins a second per client address
	maxConnsPerAddr int           // hub connections from one client address
	proxies         proxies       // whose X-Forwarded-For to believe
	sessionKey      string        // signs sessions; "" for one from Redis, or a random one
	redisURL        string        // if set, rooms are shared with the other nodes on this Redis
	dispatch        []continuation.Option
	logger          *slog.Logger
}

// defaults are the settings the flags start from.
func defaults() config {
	return config{
		pollTimeout:     20 * time.Second,
		writeTimeout:    hub.DefaultWriteTimeout,
		presence:        20 * time.Second,
		history:         clientmgr.DefaultHistory,
		historyBytes:    64 << 10,
		maxRooms:        1000,
		postRate:        2,
		roomRate:        20,
		joinRate:        2,
		maxConnsPerAddr: hub.DefaultMaxConnsPerAddr,
		logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// roomIdle is how long an unused room is kept, as long as the client
// manager keeps an idle topic: the chat reclaims a room no sooner than
// the Manager reclaims its topic, so the Manager never holds more topics
// than the chat holds rooms, and its own cap is never reached.
const roomIdle = clientmgr.DefaultIdleTimeout

// redisTimeout bounds each call the chat makes to Redis itself.
const redisTimeout = 2 * time.Second

// An event is what a room's clients receive: a message, or a nick joining
// or leaving. It is stored as JSON, the form clients get.
type event struct {
	Type string    `json:"type"` // "message", "join" or "leave"
	Nick string    `json:"nick"`
	Text string    `json:"text,omitempty"`
	Time time.Time `json:"time"`
}

// server is the chat: rooms are topics of a hub, which serves them to the
// pages over WebSocket, SSE or long-polling, and through which the pages
// post; joining, leaving and presence are plain requests. Every request
// runs on one continuation Dispatcher, the hub's.
type server struct {
	cfg      config
	mgr      *clientmgr.Manager
	d        *continuation.Dispatcher
	hub      *hub.Hub
	registry *prometheus.Registry
	handler  http.Handler
	rooms    *rooms
	joins    *limiters // by client address
	signer   signer
	rdb      *redis.Client // with -redis: the chat's own calls (the broker has its client)
	shared   *sharedClaims // with -redis: nick claims every node sees

	quit chan struct{}
	done chan struct{}
}

// newServer builds the chat server and starts its one goroutine, which
// expires absent nicks, idle rooms and idle rate limits; Close stops it.
// With a Redis URL it is one node of several: rooms, messages, cursors,
// sessions and nick claims are shared through Redis, within ctx at start.
func newServer(ctx context.Context, cfg config) (*server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &server{
		cfg:      cfg,
		registry: reg,
		rooms:    newRooms(cfg.maxRooms, cfg.roomRate, cfg.presence),
		joins:    newLimiters(cfg.joinRate),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	mgrOpts := []clientmgr.Option{
		clientmgr.WithHistory(cfg.history),
		clientmgr.WithHistoryBytes(cfg.historyBytes),
		clientmgr.WithMaxMessageSize(maxEventSize),
		clientmgr.WithIdleTimeout(roomIdle),
		clientmgr.WithMetrics(reg),
	}
	if cfg.redisURL != "" {
		b, err := redisbroker.Open(cfg.redisURL, redisbroker.WithMetrics(reg), redisbroker.WithLogger(cfg.logger))
		if err != nil {
			return nil, err
		}
		opts, _ := redis.ParseURL(cfg.redisURL) // Open has checked it
		opts.ContextTimeoutEnabled = true       // a call waits no longer than its context allows
		s.rdb = redis.NewClient(opts)
		// A claim outlives the gap between two renewals (a presence
		// interval, and one more until the next touch) and expires before
		// its nick times out of a node's members (three intervals, and
		// one more until the sweep); the mark of a departure outlives
		// every node's record of the nick.
		s.shared = &sharedClaims{rdb: s.rdb, ttl: 5 * cfg.presence / 2, gone: 5 * cfg.presence}
		mgrOpts = append(mgrOpts, clientmgr.WithBroker(b)) // closed by the Manager
	}
	mgr, err := clientmgr.Open(ctx, mgrOpts...)
	if err != nil {
		return nil, errors.Join(err, s.closeRedis())
	}
	s.mgr = mgr
	key, err := sessionKey(ctx, cfg.sessionKey, s.rdb)
	if err != nil {
		return nil, errors.Join(err, mgr.Close(), s.closeRedis())
	}
	s.signer = signer{key: key}
	s.d = continuation.NewDispatcher(http.NotFoundHandler(),
		append([]continuation.Option{continuation.WithMetrics(reg), continuation.WithLogger(cfg.logger)}, cfg.dispatch...)...)
	s.hub = hub.New(mgr,
		hub.WithDispatcher(s.d),
		hub.WithMiddleware(s.observed()...),
		hub.WithAuthorizer(hub.AuthorizerFunc(s.authorize)),
		hub.WithPublishHook(s.post),
		hub.WithPublishRate(cfg.postRate, burstOf(cfg.postRate)),
		hub.WithMaxConnsPerAddr(cfg.maxConnsPerAddr),
		hub.WithTrustedProxies(cfg.proxies...),
		hub.WithMaxMessageSize(maxFrameSize),
		hub.WithPollTimeout(cfg.pollTimeout),
		hub.WithWriteTimeout(cfg.writeTimeout),
		hub.WithMetrics(reg),
		hub.WithLogger(cfg.logger),
	)
	s.handler = s.routes()
	go s.sweep()
	return s, nil
}

func (s *server) closeRedis() error {
	if s.rdb == nil {
		return nil
	}
	return s.rdb.Close()
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(securityHeaders, chimw.RequestID, chimw.Recoverer, http.NewCrossOriginProtection().Handler)
	r.Handle("/hub/*", s.hub) // the rooms' topics, and the client, /hub/client.js
	r.Group(func(r chi.Router) {
		r.Use(s.d.Handler) // the hub's pool and limits, for the rest too
		r.Use(s.observed()...)
		staticFS, _ := fs.Sub(static, "static")
		r.Handle("/*", s.boundWrites(http.FileServerFS(staticFS)))
		r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		r.Route("/rooms/{room}", func(r chi.Router) {
			r.Use(validRoom)
			r.Post("/join", s.join)
			r.Post("/here", s.here)
			r.Post("/leave", s.leave)
			r.Get("/members", s.members)
		})
	})
	return r
}

// contentSecurityPolicy lets the page load its own script, style and
// connections and nothing else: no inline script, no other origin, no
// framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// securityHeaders sets the headers that keep the page to itself: its
// content security policy, no content-type sniffing, no framing (for
// browsers before frame-ancestors), no referrer sent elsewhere.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// Close stops the server's goroutine and the client manager (which
// resumes every client still registered) and closes its Redis client.
// Shut the hub down first, so that waiting clients are answered.
func (s *server) Close() error {
	close(s.quit)
	<-s.done
	return errors.Join(s.mgr.Close(), s.closeRedis())
}

// sweep runs once a presence interval: a page renews its presence at least
// that often, so three missed renewals and its nick has gone; then idle
// rooms and rate limits are dropped.
func (s *server) sweep() {
	defer close(s.done)
	tick := time.NewTicker(s.cfg.presence)
	defer tick.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-tick.C:
			for _, d := range s.rooms.expire(now.Add(-3 * s.cfg.presence)) {
				s.departed(d)
			}
			s.rooms.reclaim(now.Add(-roomIdle), func(room string) bool { return s.mgr.Count(topicOf(room)) > 0 })
			s.joins.sweep(now.Add(-time.Minute))
		}
	}
}

// departed announces a nick that timed out here, unless, with Redis, it
// is still present through another node, or another node announced it.
func (s *server) departed(d departure) {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	if s.shared != nil {
		announce, err := s.shared.depart(ctx, d.room, d.who)
		if err != nil {
			s.cfg.logger.Warn("chat: cannot settle a departure", "room", d.room, "err", err)
		}
		if !announce {
			return
		}
	}
	if err := s.publish(ctx, d.room, event{Type: "leave", Nick: d.who.nick}); err != nil {
		s.cfg.logger.Warn("chat: cannot announce a departure", "room", d.room, "err", err)
	}
}

// A room's hub topic is its name after "room:".
const topicPrefix = "room:"

func topicOf(room string) string { return topicPrefix + room }

// roomOf returns the room whose topic this is, if it is one.
func roomOf(topic string) (string, bool) {
	name, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok {
		return "", false
	}
	_, err := parseRoom(name)
	return name, err == nil
}

// maxEventSize bounds a stored event: the longest message (1000
// characters of up to 4 bytes each) and the rest of the event, with room
// to spare.
const maxEventSize = 8 << 10

// maxFrameSize bounds what a client sends the hub at once, a WebSocket
// message or a long-poll's body: a publish of the longest message, each of
// its characters written as a JSON escape at worst, and a few more frames.
const maxFrameSize = 16 << 10

func (s *server) publish(ctx context.Context, room string, ev event) error {
	ev.Time = time.Now().UTC()
	_, err := s.mgr.Broadcast(ctx, topicOf(room), marshal(ev))
	return err
}

// marshal encodes v as JSON without HTML escaping: the page sets text
// with textContent, never as HTML, and a "<" stays one byte, not six.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// boundWrites serves h with the write timeout: a file is written by a
// worker of the pool, which a client that does not read would hold.
func (s *server) boundWrites(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.writeTimeout))
		h.ServeHTTP(w, r)
	})
}

// writeJSON answers with v, written within the write timeout: a join's
// answer carries a room's history, which a client that does not read would
// otherwise hold a worker with.
func (s *server) writeJSON(w http.ResponseWriter, v any) {
	respond.Bounded(w, http.StatusOK, "application/json", marshal(v), s.cfg.writeTimeout)
}

// A stored event is an event as a room's topic keeps it.
type stored struct {
	typ  string
	data json.RawMessage
}

// chatEvents are the events among msgs; anything else published on a
// room's topic is left out.
func chatEvents(msgs []clientmgr.Message) []stored {
	out := make([]stored, 0, len(msgs))
	for _, m := range msgs {
		var ev event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Type != "" {
			out = append(out, stored{ev.Type, m.Data})
		}
	}
	return out
}

func validRoom(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := parseRoom(chi.URLParam(r, "room")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// observed is the middleware that must see each request's end, its waits
// included: a log line and the request metrics. It runs inside the
// Dispatcher (after it in the chain, and in the hub's dispatches): a
// request that waits detached from net/http leaves the middleware in
// front of the Dispatcher as soon as it detaches.
func (s *server) observed() []func(http.Handler) http.Handler {
	return []func(http.Handler) http.Handler{middleware.Finished(s.logRequest), middleware.RequestMetrics(s.registry)}
}

// logRequest logs one structured line per request, with its route
// pattern, client, final status and duration (waits included).
func (s *server) logRequest(r *http.Request, status int, elapsed time.Duration) {
	route := ""
	if rctx := chi.RouteContext(r.Context()); rctx != nil {
		route = rctx.RoutePattern()
	}
	s.cfg.logger.Info("request", "method", r.Method, "route", route, "status", status,
		"client", s.cfg.proxies.client(r), "duration", elapsed, "id", chimw.GetReqID(r.Context()))
}
