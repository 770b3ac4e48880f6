package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cometkit/cometkit/internal/sleep"
)

// The subscriber modes.
const (
	modeSince   = "since"   // long-poll GET /subscribe?since=CURSOR: a JSON batch of everything after it, and the next cursor
	modeClassic = "classic" // long-poll GET /subscribe: the next message as text, misses between polls
	modeSSE     = "sse"     // one GET /events stream per subscriber, resumed with Last-Event-ID
)

// config is one load run.
type config struct {
	Target      string        // base URL of a server speaking the longpoll example's protocol
	Subscribers int           // concurrent subscribers
	Mode        string        // modeSince, modeClassic, modeSSE, or one of the hub's: modeWS, modeHubSSE, modeHubPoll
	SourceIPs   int           // spread HTTP/1.1 clients over 127.0.0.1 … 127.0.0.N (ports per address are limited)
	H2C         bool          // use cleartext HTTP/2 (many requests per connection) for an http:// target
	Streams     int           // HTTP/2: waiting requests per connection
	Insecure    bool          // for an https:// target: accept a self-signed certificate
	Rate        float64       // publishing ticks per second
	Burst       int           // messages published back to back at each tick
	Rounds      int           // if > 0, instead of Rate: this many single broadcasts, each once every subscriber is waiting
	Settle      time.Duration // Rounds: pause once every subscriber has re-polled, for the server to hold them
	Duration    time.Duration // how long to publish at Rate
	Warmup      time.Duration // the longest to wait for every subscriber to be waiting before publishing
	Grace       time.Duration // after publishing, the longest to wait for the last deliveries
	ServerPID   int           // if set, the server's memory and CPU are read from /proc
	QuitServer  bool          // at the end, with every subscriber waiting, send the server SIGQUIT (a Go server prints its goroutines and exits)
}

func (cfg config) validate() error {
	switch {
	case cfg.Subscribers < 1:
		return errors.New("-n must be positive")
	case !slices.Contains([]string{modeSince, modeClassic, modeSSE, modeWS, modeHubSSE, modeHubPoll}, cfg.Mode):
		return fmt.Errorf("unknown -mode %q: use since, classic, sse, ws, hub-sse or hub-poll", cfg.Mode)
	case cfg.Mode == modeWS && (cfg.H2C || strings.HasPrefix(cfg.Target, "https://")):
		return errors.New("-mode ws runs over HTTP/1.1 only: a WebSocket over HTTP/2 is not supported")
	case cfg.Rounds == 0 && (cfg.Rate <= 0 || cfg.Duration <= 0):
		return errors.New("-rate and -duration must be positive (or use -rounds)")
	case cfg.Burst < 1:
		return errors.New("-burst must be 1 or more")
	case cfg.QuitServer && cfg.ServerPID == 0:
		return errors.New("-sigquit needs the server's -pid")
	}
	return checkLoopback(cfg.Target)
}

// result is what a run measured.
type result struct {
	Mode              string         `json:"mode"`
	Transport         string         `json:"transport"`
	Subscribers       int            `json:"subscribers"`
	Waiting           int            `json:"waiting"` // subscribers waiting when publishing began
	Published         int            `json:"published"`
	Expected          int            `json:"expected_deliveries"`
	Delivered         int            `json:"delivered"`
	DeliveredFraction float64        `json:"delivered_fraction"`
	Duplicates        int            `json:"duplicates"`
	LatencyP50Ms      float64        `json:"latency_p50_ms"`
	LatencyP99Ms      float64        `json:"latency_p99_ms"`
	FanoutP50Ms       float64        `json:"fanout_p50_ms"` // publish to the last subscriber's receipt
	FanoutP99Ms       float64        `json:"fanout_p99_ms"`
	Polls             int64          `json:"polls"`
	Errors            map[string]int `json:"errors"`
	Server            *serverUsage   `json:"server,omitempty"`
}

// checkLoopback refuses any target that is not on this machine: load is
// only ever sent to 127.0.0.0/8 or ::1.
func checkLoopback(target string) error {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bad target %q", target)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("bad target %q: use http:// or https://", target)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("target %s is not a loopback address; cometload only loads this machine", host)
}

// run performs one load run and returns its measurements. Progress goes to
// progress, if not nil, about once a second.
func run(ctx context.Context, cfg config, progress io.Writer) (result, error) {
	if err := cfg.validate(); err != nil {
		return result{}, err
	}
	if progress == nil {
		progress = io.Discard
	}
	var usage *serverUsage
	if cfg.ServerPID > 0 {
		var err error
		if usage, err = startUsage(cfg.ServerPID); err != nil {
			return result{}, err
		}
	}
	clients, pubClient, transport := newClients(cfg)
	defer func() {
		for _, c := range append(clients, pubClient) {
			c.CloseIdleConnections()
		}
	}()
	st := newStats(cfg.Subscribers)

	// The subscribers run until subCtx ends; every return below stops
	// them and waits for them.
	subCtx, stopSubs := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopSubs()
		wg.Wait()
	}()
	for i := range cfg.Subscribers {
		s := &subscriber{id: i, client: clients[i%len(clients)], target: cfg.Target, st: st}
		wg.Go(func() { s.run(subCtx, cfg.Mode) })
	}

	waiting := awaitWaiting(ctx, st, cfg.Subscribers, cfg.Warmup, progress)
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}
	sleep.For(ctx, cfg.Settle) // for the server to hold the last ones
	if usage != nil {
		if err := usage.loaded(); err != nil {
			return result{}, err
		}
		usage.held(waiting)
	}

	p := &publisher{client: pubClient, cfg: cfg, st: st, progress: progress}
	var published int
	if cfg.Rounds > 0 {
		published = p.rounds(ctx)
	} else {
		published = p.steady(ctx)
		awaitDelivered(ctx, st, published, cfg.Grace)
	}
	if usage != nil {
		if err := usage.finished(); err != nil {
			return result{}, err
		}
		again := awaitWaiting(ctx, st, cfg.Subscribers, cfg.Grace, progress)
		sleep.For(ctx, cfg.Settle)
		if err := usage.after(again); err != nil {
			return result{}, err
		}
	}
	if cfg.QuitServer {
		if err := syscall.Kill(cfg.ServerPID, syscall.SIGQUIT); err != nil {
			return result{}, fmt.Errorf("signalling the server: %w", err)
		}
	}
	stopSubs()
	wg.Wait()
	res := st.result(cfg, published)
	res.Transport, res.Waiting = transport, waiting
	if usage != nil {
		usage.perDelivery(res.Delivered)
		res.Server = usage
	}
	return res, nil
}

// awaitWaiting waits until n subscribers are waiting on the server, or
// at most max, and returns how many are.
func awaitWaiting(ctx context.Context, st *stats, n int, max time.Duration, progress io.Writer) int {
	deadline := time.Now().Add(max)
	lastReport := time.Now()
	for {
		w := int(st.waiting.Load())
		if w >= n || time.Now().After(deadline) || !sleep.For(ctx, 10*time.Millisecond) {
			fmt.Fprintf(progress, "cometload: %d of %d subscribers waiting\n", w, n)
			return w
		}
		if time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			fmt.Fprintf(progress, "cometload: connecting, %d of %d waiting\n", w, n)
		}
	}
}

// awaitDelivered waits until every subscriber has every published message,
// or at most max.
func awaitDelivered(ctx context.Context, st *stats, published int, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) && !st.allReached(published) {
		if !sleep.For(ctx, 10*time.Millisecond) {
			return
		}
	}
}

// stats gathers deliveries from every subscriber. Messages are known by
// their payload, unique to this run: messages already in the server's
// history from earlier runs are not counted.
type stats struct {
	waiting  atomic.Int64   // requests (or streams) the server holds, as far as the client knows
	received []atomic.Int64 // per subscriber: messages of this run it has
	polls    atomic.Int64

	mu        sync.Mutex
	published map[string]time.Time // payload → when it was published
	order     []string             // payloads in publishing order
	lastSeen  map[string]time.Time // payload → its last delivery
	count     map[string]int
	latencies []time.Duration
	dups      int
	errors    map[string]int
}

func newStats(subscribers int) *stats {
	return &stats{
		received:  make([]atomic.Int64, subscribers),
		published: map[string]time.Time{}, lastSeen: map[string]time.Time{},
		count: map[string]int{}, errors: map[string]int{},
	}
}

func (st *stats) fail(kind string) {
	st.mu.Lock()
	st.errors[kind]++
	st.mu.Unlock()
}

// deliver records that subscriber id received the payloads at now; seen
// is that subscriber's own set, for duplicates.
func (st *stats) deliver(id int, payloads []string, seen map[string]bool, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, p := range payloads {
		sent, ours := st.published[p]
		if !ours {
			continue // from before this run, or not acknowledged to the publisher
		}
		if seen[p] {
			st.dups++
			continue
		}
		seen[p] = true
		st.count[p]++
		st.lastSeen[p] = now
		st.latencies = append(st.latencies, now.Sub(sent))
		st.received[id].Add(1)
	}
}

func (st *stats) allReached(published int) bool {
	for i := range st.received {
		if st.received[i].Load() < int64(published) {
			return false
		}
	}
	return true
}

func (st *stats) result(cfg config, published int) result {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := result{Mode: cfg.Mode, Subscribers: cfg.Subscribers, Published: published,
		Expected: cfg.Subscribers * published, Duplicates: st.dups, Polls: st.polls.Load(), Errors: st.errors}
	var fanouts []time.Duration
	for _, payload := range st.order {
		r.Delivered += st.count[payload]
		if st.count[payload] > 0 {
			fanouts = append(fanouts, st.lastSeen[payload].Sub(st.published[payload]))
		}
	}
	if r.Expected > 0 {
		r.DeliveredFraction = float64(r.Delivered) / float64(r.Expected)
	}
	r.LatencyP50Ms, r.LatencyP99Ms = percentiles(st.latencies)
	r.FanoutP50Ms, r.FanoutP99Ms = percentiles(fanouts)
	return r
}

func percentiles(ds []time.Duration) (p50, p99 float64) {
	if len(ds) == 0 {
		return 0, 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / float64(time.Millisecond) }
	return at(0.50), at(0.99)
}
