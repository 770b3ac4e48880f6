// Command chat is a chat server on cometkit: rooms, nicknames, join and
// leave notices, the room's recent events on joining, who is online, and
// two transports the page chooses between, long-poll and an event stream
// (SSE), both catching up from the client's cursor so that no message is
// lost without the client being told.
//
//	go run ./examples/chat            # then open http://localhost:8080
//
// With -redis, it is one node of several sharing rooms through Redis, as
// behind a load balancer:
//
//	go run ./examples/chat -addr :8081 -redis redis://127.0.0.1:6379/0 &
//	go run ./examples/chat -addr :8082 -redis redis://127.0.0.1:6379/0
//
// # The wire
//
//	POST /rooms/{room}/join       form nick; sets the session cookie; answers
//	                              {"nick","cursor","history":[events],"members":[nicks]}
//	POST /rooms/{room}/messages   form text, from the session's nick
//	POST /rooms/{room}/leave      the session's nick leaves
//	GET  /rooms/{room}/members    the nicks present (on this node)
//	GET  /rooms/{room}/subscribe?transport=longpoll&since=CURSOR
//	                              {"events":[…],"complete":true,"next":"CURSOR"}
//	GET  /rooms/{room}/subscribe?transport=sse&since=CURSOR
//	                              events named message, join and leave, each
//	                              with its cursor as its id (Last-Event-ID
//	                              resumes), and "missed" when complete is false
//
// An event is {"type":"message"|"join"|"leave","nick","text","time"}.
// A cursor is an opaque token (clientmgr.Cursor's form): the position of
// the last event the client has seen, in a sequence that has an epoch.
// When the server restarts (with the in-process broker), a room is
// reclaimed, or a client's cursor is older than the room keeps, the
// client gets what there is with complete false, or a "missed" event,
// and the page says "you may have missed messages" and carries on from
// the new cursor.
//
// # Identity
//
// A nick belongs to whoever joined with it. Join gives the client a
// session: a cookie (HttpOnly, SameSite=Strict) holding a token that
// binds a random session id to the nick, signed with HMAC-SHA256. Posting,
// leaving and being present while subscribed act as the session's nick;
// no request names one. A nick present in a room cannot be taken by
// another session (409), nor can one that looks like it: nicks are
// letters of one script (or of the mix one language writes with), digits
// and single separators, with no invisible or combining characters, and
// are compared by what they look like ("alice", "Alice", "ALICE", "aIice"
// and "a1ice" are one nick, as are Latin "scope" and a Cyrillic "ѕсоре";
// the comparison is coarse, so "ian" and "lan" are one nick too).
// Lookalikes the chat's short table does not know, and those a font makes,
// remain possible; so does one person joining with several sessions under
// different nicks. One browser is one session: joining with another nick
// in a second tab or window changes the nick, and the page in the first
// says so and returns to the join form (two people on one computer use
// two browsers, or a private window).
//
// A session's token is valid for a day; each join renews it. Sessions are
// signed with the key in $CHAT_SESSION_SECRET (at least 32 bytes; give
// every node the same). Without it, with -redis, the first
// node stores a random key in Redis (SETNX) and every node uses that one;
// otherwise the key is random per process, and a restart ends every
// session (the page joins again by itself). With Redis, which session
// holds a nick in a room is kept in Redis too, so a nick present through
// one node cannot be taken through another. The member list a node
// answers is of the nicks present through it (a nick that left through
// another node stays on it for up to three poll timeouts); the page keeps
// its list from the join and leave events, which every node sees.
//
// Writes from other sites are refused: every POST passes
// http.CrossOriginProtection (Sec-Fetch-Site and Origin), and the
// SameSite=Strict cookie is not sent with another site's requests. The
// page is served with a Content-Security-Policy that allows no inline
// script and no framing, with X-Content-Type-Options nosniff and
// X-Frame-Options DENY; it sets every text with textContent, never as HTML.
//
// # Limits
//
// Whatever a client sends costs a bounded amount. Rate limits are per
// session (-post-rate messages a second), per room (-room-rate events a
// second) and, for joins, which make sessions, per client address
// (-join-rate a second); each allows bursts of three seconds' worth, and
// answers 429 with Retry-After beyond; with several nodes, each node
// limits what reaches it. A node holds at most -max-rooms rooms (below
// the client manager's cap on topics): a join or subscription that would
// make one more gets 503 with Retry-After, and an idle room is reclaimed
// after five minutes. A room holds at most 500 nicks, and keeps
// -history events and -history-bytes bytes of them (with Redis, Redis
// keeps -history of them); a join answer holds at most 50 events and
// 64 KiB of them. Events are JSON without HTML escaping, so a "<" is one
// byte. Join and leave notices carry the change, so viewers update their
// member list without asking for it again.
//
// The client address is the connection's peer, unless the peer is one
// of -trusted-proxies (addresses or CIDR prefixes); then it is the last
// address in X-Forwarded-For that is not a trusted proxy. X-Real-IP and
// True-Client-IP are never read. Behind nginx, set
// "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" and list
// nginx's address; behind haproxy, "option forwardfor".
//
// # Operating it
//
// The server bounds what a connection may hold: -header-timeout for the
// request headers, -read-timeout for a whole request, -idle-timeout for a
// keep-alive connection between requests. SIGINT or SIGTERM drains it:
// every waiting client is answered, for at most -drain; a second signal
// stops it at once (exit status 1). Metrics are served on -metrics-addr
// only (off by default; give a loopback address such as 127.0.0.1:9090),
// never on the public address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/examples/internal/serve"
	"github.com/cometkit/cometkit/middleware"
)

func main() {
	var sc serve.Config
	sc.Flags(flag.CommandLine)
	cfg := defaults()
	flag.DurationVar(&cfg.pollTimeout, "timeout", cfg.pollTimeout, "how long a poll waits (keep it under the 30 s proxies allow)")
	flag.IntVar(&cfg.history, "history", cfg.history, "events kept per room")
	flag.IntVar(&cfg.historyBytes, "history-bytes", cfg.historyBytes, "bytes of events kept per room (in this process)")
	flag.IntVar(&cfg.maxRooms, "max-rooms", cfg.maxRooms, "rooms this node holds at once")
	flag.Float64Var(&cfg.postRate, "post-rate", cfg.postRate, "messages a second per session")
	flag.Float64Var(&cfg.roomRate, "room-rate", cfg.roomRate, "events (messages, joins) a second per room")
	flag.Float64Var(&cfg.joinRate, "join-rate", cfg.joinRate, "joins a second per client address")
	trusted := flag.String("trusted-proxies", "", "comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For is believed")
	flag.StringVar(&cfg.redisURL, "redis", "", "share rooms with other nodes through this Redis (redis://host:port/db)")
	metricsAddr := flag.String("metrics-addr", "", "serve /metrics on this address only, such as 127.0.0.1:9090 (default: no metrics)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg.logger = log
	cfg.sessionKey = os.Getenv(sessionKeyEnv)
	cfg.dispatch = sc.Dispatch()
	err := cfg.check()
	if err == nil {
		cfg.proxies, err = parseProxies(*trusted)
	}
	if err == nil {
		err = run(sc, cfg, *metricsAddr)
	}
	if err != nil {
		log.Error("chat", "err", err)
		os.Exit(1)
	}
}

// check refuses settings that cannot be meant.
func (cfg config) check() error {
	switch {
	case cfg.pollTimeout <= 0:
		return fmt.Errorf("chat: -timeout %v: must be more than 0", cfg.pollTimeout)
	case cfg.maxRooms < 1 || cfg.maxRooms >= clientmgr.DefaultMaxTopics:
		return fmt.Errorf("chat: -max-rooms %d: must be 1 to %d (below the client manager's cap on topics)", cfg.maxRooms, clientmgr.DefaultMaxTopics-1)
	case cfg.history < 1 || cfg.historyBytes < 1:
		return fmt.Errorf("chat: -history %d, -history-bytes %d: must be at least 1", cfg.history, cfg.historyBytes)
	case cfg.postRate <= 0 || cfg.roomRate <= 0 || cfg.joinRate <= 0:
		return errors.New("chat: -post-rate, -room-rate and -join-rate must be more than 0")
	}
	return nil
}

// run serves until SIGINT or SIGTERM, then drains; see package serve.
func run(sc serve.Config, cfg config, metricsAddr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // for Redis to answer
	s, err := newServer(ctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	stopMetrics := func() error { return nil }
	if metricsAddr != "" {
		if stopMetrics, err = serveMetrics(metricsAddr, s); err != nil {
			return errors.Join(err, s.Close())
		}
	}
	srv := sc.Server(s)
	err = serve.Run(srv, srv.ListenAndServe, s.mw, sc.Drain, cfg.logger)
	return errors.Join(err, stopMetrics(), s.Close())
}

// serveMetrics serves /metrics on its own listener, apart from the
// public address, until the returned stop is called.
func serveMetrics(addr string, s *server) (stop func() error, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("chat: -metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", middleware.MetricsHandler(s.registry))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	s.cfg.logger.Info("metrics listening", "addr", l.Addr().String())
	return func() error {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}
