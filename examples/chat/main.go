// Command chat is a chat server on cometkit's hub: rooms, nicknames, join
// and leave notices, the room's recent events on joining, who is online,
// and a page that follows its room over a WebSocket, an event stream (SSE)
// or long-polling, whichever works, resuming from its cursor after every
// break so that no message is lost without the page being told.
//
//	go run ./examples/chat            # then open http://localhost:8080
//
// With -redis, it is one node of several sharing rooms through Redis, as
// behind a load balancer:
//
//	go run ./examples/chat -addr 127.0.0.1:8081 -redis redis://127.0.0.1:6379/0 &
//	go run ./examples/chat -addr 127.0.0.1:8082 -redis redis://127.0.0.1:6379/0
//
// # The wire
//
// A room is the topic "room:NAME" of a hub (package hub, whose wire format
// is docs/hub.md) at /hub/; the page uses the hub's own client,
// /hub/client.js, which picks the transport (?transport=websocket, sse or
// longpoll on the page's URL forces one, for tests) and shares one
// connection among the tabs of a browser. Every room's topic may be
// followed by anyone; posting is a publish on it, which the hub allows a
// session whose nick is present in the room, and which the chat turns into
// a message event from that nick.
//
//	POST /rooms/{room}/join     form nick; sets the session cookie; answers
//	                            {"nick","topic","cursor","history":[events],
//	                            "members":[nicks],"renew_ms"}
//	POST /rooms/{room}/here     the session's nick is still here: 204, or 410
//	                            if it is not present (join again)
//	POST /rooms/{room}/leave    the session's nick leaves
//	GET  /rooms/{room}/members  the nicks present (through this node)
//	/hub/                       subscribe to "room:NAME" from the join's
//	                            cursor; publish the text of a message on it
//
// An event, the data of each of the topic's messages, is
// {"type":"message"|"join"|"leave","nick","text","time"}. When the server
// restarts (with the in-process broker), a room is reclaimed, or a page's
// cursor is older than the room keeps, the hub tells the page it missed
// messages, and the page says "you may have missed messages" and carries
// on.
//
// # Identity and presence
//
// A nick belongs to whoever joined with it. Join gives the client a
// session: a cookie (HttpOnly, SameSite=Strict) holding a token that
// binds a random session id to the nick, signed with HMAC-SHA256. Posting,
// leaving and renewing presence act as the session's nick; no request
// names one. A nick present in a room cannot be taken by another session
// (409), nor can one that looks like it: nicks are letters of one script
// (or of the mix one language writes with), digits and single separators,
// with no invisible or combining characters, and are compared by what they
// look like ("alice", "Alice", "ALICE", "aIice" and "a1ice" are one nick,
// as are Latin "scope" and a Cyrillic "ѕсоре"; the comparison is coarse, so
// "ian" and "lan" are one nick too). Lookalikes the chat's short table does
// not know, and those a font makes, remain possible; so does one person
// joining with several sessions under different nicks. One browser is one
// session: joining with another nick in a second tab or window changes the
// nick, and the page in the first says so and returns to the join form;
// leaving a room in one tab leaves it in all (two people on one computer
// use two browsers, or a private window).
//
// A nick is present from its join until it leaves, or until its page
// stops saying it is here (POST here, every renew_ms, which -presence
// sets): after three missed renewals it has left, and the room is told.
// Only a join makes a nick present: a renewal or a post for a nick that is
// not (it left, timed out, or the server restarted) is refused, and the
// page joins again. Closing or reloading the page does not leave the room;
// a reload joins again with the nick the page remembers, which the room
// does not see.
//
// A session's token is valid for a day; each join renews it. Sessions are
// signed with the key in $CHAT_SESSION_SECRET (at least 32 bytes; give
// every node the same). Without it, with -redis, the first
// node stores a random key in Redis (SETNX) and every node uses that one;
// otherwise the key is random per process, and a restart ends every
// session (the page joins again by itself). The hub reads the session when
// a connection opens, so the page reconnects after its session changes.
//
// With Redis, which session holds a nick in a room is kept in Redis too,
// so a nick present through one node cannot be taken through another, and
// one that left through any node is no longer present on the others.
// Presence itself is per node: a node knows the nicks whose pages renew
// through it, drops one that left through another node when it next
// checks Redis (at its next renewal, or when asked for the members), and
// times out one whose page stopped renewing; of the nodes that time a
// nick out, one announces it. The page keeps its member list from the
// join and leave events, which every node sees.
//
// Writes from other sites are refused: every POST passes
// http.CrossOriginProtection (Sec-Fetch-Site and Origin), the hub refuses
// a connection from a page of another origin, and the SameSite=Strict
// cookie is not sent with another site's requests. The page is served
// with a Content-Security-Policy that allows no inline script and no
// framing, with X-Content-Type-Options nosniff and X-Frame-Options DENY;
// it sets every text with textContent, never as HTML.
//
// # Limits
//
// Whatever a client sends costs a bounded amount. Rate limits are per
// session (-post-rate messages a second: the hub's publish rate, whose
// refusal says when to try again), per room (-room-rate events a second)
// and, for joins, which make sessions, per client address (-join-rate a
// second, which a subscription that makes a room the node does not hold
// counts against too); each allows bursts of three seconds' worth; a join beyond its
// limit gets 429 with Retry-After; with several nodes, each node limits
// what reaches it. A node holds at most -max-rooms rooms (below the client
// manager's cap on topics): a join that would make one more gets 503 with
// Retry-After, a subscription to it is forbidden, and an idle room is
// reclaimed after five minutes. A room holds at most 500 nicks, and keeps
// -history events and -history-bytes bytes of them (with Redis, Redis
// keeps -history of them); a join answer holds at most 50 events and
// 64 KiB of them. A client may hold -max-conns-per-addr connections to the
// hub, and send it 16 KiB at once. Events are JSON without HTML escaping,
// so a "<" is one byte. Join and leave notices carry the change, so
// viewers update their member list without asking for it again.
//
// The client address is the connection's peer, unless the peer is one
// of -trusted-proxies (addresses or CIDR prefixes); then it is the last
// address in X-Forwarded-For that is not a trusted proxy. X-Real-IP and
// True-Client-IP are never read. Behind a proxy, have it set the header
// to the address it saw (nginx "proxy_set_header X-Forwarded-For
// $remote_addr;", haproxy "http-request set-header X-Forwarded-For
// %[src]") and list the proxy's address. docs/proxy has complete, tested
// configurations for nginx and haproxy in front of two chat nodes.
//
// # Operating it
//
// The server bounds what a connection may hold: -header-timeout for the
// request headers, -read-timeout for a whole request, -idle-timeout for a
// keep-alive connection between requests. SIGINT or SIGTERM drains it:
// every long-poll is answered, every event stream ended and every
// WebSocket closed with 1001 (the pages come back, from their cursors),
// for at most -drain; a second signal stops it at once (exit status 1).
// Metrics are served on -metrics-addr only (off by default; give a
// loopback address such as 127.0.0.1:9090), never on the public address.
// A flag whose value cannot be meant (a duration or rate of 0 or less, a
// cap below 1) stops the command at start, with a message naming it.
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
	flag.DurationVar(&cfg.pollTimeout, "timeout", cfg.pollTimeout, "how long a long-poll waits (keep it under the 30 s proxies allow)")
	flag.DurationVar(&cfg.presence, "presence", cfg.presence, "how often a page renews its nick's presence; three missed renewals and it has left")
	flag.IntVar(&cfg.maxConnsPerAddr, "max-conns-per-addr", cfg.maxConnsPerAddr, "connections to the hub from one client address (raise it for offices and carriers behind one address)")
	flag.IntVar(&cfg.history, "history", cfg.history, "events kept per room")
	flag.IntVar(&cfg.historyBytes, "history-bytes", cfg.historyBytes, "bytes of events kept per room (in this process)")
	flag.IntVar(&cfg.maxRooms, "max-rooms", cfg.maxRooms, "rooms this node holds at once")
	flag.Float64Var(&cfg.postRate, "post-rate", cfg.postRate, "messages a second per session")
	flag.Float64Var(&cfg.roomRate, "room-rate", cfg.roomRate, "events (messages, joins) a second per room")
	flag.Float64Var(&cfg.joinRate, "join-rate", cfg.joinRate, "joins a second per client address; a room a subscription makes counts as a join")
	trusted := flag.String("trusted-proxies", "", "comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For is believed")
	flag.StringVar(&cfg.redisURL, "redis", "", "share rooms with other nodes through this Redis (redis://host:port/db)")
	metricsAddr := flag.String("metrics-addr", "", "serve /metrics on this address only, such as 127.0.0.1:9090 (default: no metrics)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg.logger = log
	cfg.sessionKey = os.Getenv(sessionKeyEnv)
	cfg.dispatch = sc.Dispatch()
	cfg.writeTimeout = sc.WriteTimeout
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
	case cfg.pollTimeout <= 0 || cfg.presence <= 0 || cfg.writeTimeout <= 0:
		return fmt.Errorf("chat: -timeout %v, -presence %v, -write-timeout %v: must be more than 0", cfg.pollTimeout, cfg.presence, cfg.writeTimeout)
	case cfg.maxConnsPerAddr < 1:
		return fmt.Errorf("chat: -max-conns-per-addr %d: must be at least 1", cfg.maxConnsPerAddr)
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
	err = serve.Run(srv, "", "", s.hub, sc.Drain, cfg.logger)
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
