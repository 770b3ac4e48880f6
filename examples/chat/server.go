package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/time/rate"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/middleware"
)

//go:embed static
var static embed.FS

// config is the chat server's settings (the command's flags).
type config struct {
	pollTimeout time.Duration // a long-poll answers [] after this; SSE sends a keep-alive
	history     int           // messages kept per room
	dispatch    []continuation.Option
	logger      *slog.Logger
	redisURL    string // if set, rooms are shared with the other nodes on this Redis
}

// An event is what a room's clients receive: a message, or a nick joining
// or leaving.
type event struct {
	Seq  uint64    `json:"seq"`
	Type string    `json:"type"` // "message", "join" or "leave"
	Nick string    `json:"nick"`
	Text string    `json:"text,omitempty"`
	Time time.Time `json:"time"`
}

// server is the chat: rooms are clientmgr topics, presence is tracked per
// room, and every request goes through one continuation middleware.
type server struct {
	cfg      config
	mgr      *clientmgr.Manager
	mw       *middleware.Middleware
	present  *presence
	registry *prometheus.Registry
	handler  http.Handler

	limitMu  sync.Mutex
	limiters map[string]*limiter // per client (nick and address) for posting

	quit chan struct{}
	done chan struct{}
}

type limiter struct {
	*rate.Limiter
	seen time.Time
}

// newServer builds the chat server and starts its one goroutine, which
// expires absent nicks and idle rate limiters; Close stops it. With a
// Redis URL it is one node of several: rooms, messages and cursors are
// shared through Redis (presence stays per node).
func newServer(cfg config) (*server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mgrOpts := []clientmgr.Option{clientmgr.WithHistory(cfg.history), clientmgr.WithMetrics(reg)}
	if cfg.redisURL != "" {
		b, err := redisbroker.Open(cfg.redisURL, redisbroker.WithHistory(cfg.history),
			redisbroker.WithMetrics(reg), redisbroker.WithLogger(cfg.logger))
		if err != nil {
			return nil, err
		}
		mgrOpts = append(mgrOpts, clientmgr.WithBroker(b)) // closed by the Manager
	}
	s := &server{
		cfg:      cfg,
		mgr:      clientmgr.New(mgrOpts...),
		mw:       middleware.New(append([]continuation.Option{continuation.WithMetrics(reg), continuation.WithLogger(cfg.logger)}, cfg.dispatch...)...),
		present:  newPresence(),
		registry: reg,
		limiters: make(map[string]*limiter),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.handler = s.routes()
	go s.sweep()
	return s, nil
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(chimw.RequestID, chimw.RealIP, s.logRequests, chimw.Recoverer, middleware.RequestMetrics(s.registry), s.mw.Handler)
	staticFS, _ := fs.Sub(static, "static")
	r.Handle("/*", http.FileServerFS(staticFS))
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	r.Handle("/metrics", middleware.MetricsHandler(s.registry))
	r.Route("/rooms/{room}", func(r chi.Router) {
		r.Use(validRoom)
		r.Post("/join", s.join)
		r.Post("/leave", s.leave)
		r.Post("/messages", s.post)
		r.Get("/members", s.members)
		r.Get("/subscribe", s.subscribe)
	})
	return r
}

// Close answers every waiting client and stops the server's goroutine.
func (s *server) Close(ctx context.Context) error {
	err := s.mw.Shutdown(ctx)
	close(s.quit)
	<-s.done
	return errors.Join(err, s.mgr.Close())
}

func (s *server) sweep() {
	defer close(s.done)
	tick := time.NewTicker(s.cfg.pollTimeout)
	defer tick.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-tick.C:
			// A client polls at least once per poll timeout; three missed
			// polls and it has gone.
			for _, d := range s.present.expire(now.Add(-3 * s.cfg.pollTimeout)) {
				s.publish(context.Background(), d.room, event{Type: "leave", Nick: d.nick})
			}
			s.limitMu.Lock()
			for key, l := range s.limiters {
				if now.Sub(l.seen) > time.Minute {
					delete(s.limiters, key)
				}
			}
			s.limitMu.Unlock()
		}
	}
}

func topicOf(room string) string { return "room:" + room }

func (s *server) publish(ctx context.Context, room string, ev event) error {
	ev.Time = time.Now().UTC()
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = s.mgr.Broadcast(ctx, topicOf(room), data)
	return err
}

// events turns stored messages into events.
func events(msgs []clientmgr.Message) []event {
	out := make([]event, 0, len(msgs))
	for _, m := range msgs {
		var ev event
		if json.Unmarshal(m.Data, &ev) == nil {
			ev.Seq = m.Seq
			out = append(out, ev)
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

// form reads a POST's form of at most limit bytes; a larger one is
// refused with 413, a malformed one with 400.
func form(w http.ResponseWriter, r *http.Request, limit int64) bool {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := r.ParseForm(); err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		}
		return false
	}
	return true
}

func (s *server) nick(w http.ResponseWriter, r *http.Request) (string, bool) {
	nick, err := parseNick(r.FormValue("nick"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", false
	}
	return nick, true
}

// join enters the room: a join notice (the first time), then the room's
// last 50 events, the members and the cursor to poll from.
func (s *server) join(w http.ResponseWriter, r *http.Request) {
	if !form(w, r, 4<<10) {
		return
	}
	nick, ok := s.nick(w, r)
	if !ok {
		return
	}
	room := chi.URLParam(r, "room")
	if s.present.touch(room, nick, time.Now()) {
		if err := s.publish(r.Context(), room, event{Type: "join", Nick: nick}); err != nil {
			s.unavailable(w, err)
			return
		}
	}
	last := s.mgr.LastSeq(topicOf(room))
	msgs, _ := s.mgr.Since(topicOf(room), last-min(last, historyOnJoin))
	writeJSON(w, map[string]any{"cursor": last, "history": events(msgs), "members": s.present.members(room)})
}

func (s *server) leave(w http.ResponseWriter, r *http.Request) {
	if !form(w, r, 4<<10) {
		return
	}
	nick, ok := s.nick(w, r)
	if !ok {
		return
	}
	room := chi.URLParam(r, "room")
	if s.present.leave(room, nick) {
		s.publish(r.Context(), room, event{Type: "leave", Nick: nick})
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) post(w http.ResponseWriter, r *http.Request) {
	if !form(w, r, 16<<10) {
		return
	}
	nick, ok := s.nick(w, r)
	if !ok {
		return
	}
	text, err := parseText(r.FormValue("text"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !s.allow(nick + "@" + clientAddr(r)) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many messages: slow down", http.StatusTooManyRequests)
		return
	}
	room := chi.URLParam(r, "room")
	s.present.touch(room, nick, time.Now())
	if err := s.publish(r.Context(), room, event{Type: "message", Nick: nick, Text: text}); err != nil {
		s.unavailable(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// allow applies the per-client rate limit: 2 messages a second, bursts of 5.
func (s *server) allow(client string) bool {
	s.limitMu.Lock()
	defer s.limitMu.Unlock()
	l := s.limiters[client]
	if l == nil {
		l = &limiter{Limiter: rate.NewLimiter(2, 5)}
		s.limiters[client] = l
	}
	l.seen = time.Now()
	return l.Allow()
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *server) members(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.present.members(chi.URLParam(r, "room")))
}

func (s *server) unavailable(w http.ResponseWriter, err error) {
	s.cfg.logger.Warn("chat: cannot publish", "err", err)
	w.Header().Set("Retry-After", "1")
	http.Error(w, "cannot publish now, retry", http.StatusServiceUnavailable)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// logRequests logs one structured line per request, with its route
// pattern, final status and duration (waits included).
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := chimw.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := ""
		if rctx := chi.RouteContext(r.Context()); rctx != nil {
			route = rctx.RoutePattern()
		}
		s.cfg.logger.Info("request", "method", r.Method, "route", route, "status", ww.Status(),
			"duration", time.Since(start), "id", chimw.GetReqID(r.Context()))
	})
}
