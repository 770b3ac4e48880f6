package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// config is one load run.
type config struct {
	Target      string        // base URL of a server speaking the longpoll example's protocol
	Subscribers int           // concurrent long-poll clients
	SourceIPs   int           // spread HTTP/1.1 clients over 127.0.0.1 … 127.0.0.N (ports per address are limited)
	H2C         bool          // use cleartext HTTP/2 (many requests per connection) instead
	Rate        float64       // messages published per second
	Duration    time.Duration // how long to publish
	Warmup      time.Duration // before publishing, for subscribers to connect
	Grace       time.Duration // after publishing, for the last deliveries
	ServerPID   int           // if set, the server's resident memory is read from /proc
}

// result is what a run measured.
type result struct {
	Subscribers       int            `json:"subscribers"`
	Published         int            `json:"published"`
	Expected          int            `json:"expected_deliveries"`
	Delivered         int            `json:"delivered"`
	DeliveredFraction float64        `json:"delivered_fraction"`
	Duplicates        int            `json:"duplicates"`
	LatencyP50Ms      float64        `json:"latency_p50_ms"`
	LatencyP99Ms      float64        `json:"latency_p99_ms"`
	FanoutP50Ms       float64        `json:"fanout_p50_ms"`
	FanoutP99Ms       float64        `json:"fanout_p99_ms"`
	Polls             int64          `json:"polls"`
	ServerRSSBytes    int64          `json:"server_rss_bytes,omitempty"` // with every subscriber waiting, before publishing
	Errors            map[string]int `json:"errors"`
}

// checkLoopback refuses any target that is not on this machine: load is
// only ever sent to 127.0.0.0/8 or ::1.
func checkLoopback(target string) error {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bad target %q", target)
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

// stats gathers deliveries from every subscriber. Messages are known by
// their payload, the publisher's send time in nanoseconds, which is unique
// to this run: messages already in the server's history from earlier runs
// are not counted.
type stats struct {
	mu        sync.Mutex
	published map[string]time.Time // payload → when it was published
	order     []string             // payloads in publishing order
	lastSeen  map[string]time.Time // payload → its last delivery
	count     map[string]int
	latencies []time.Duration
	dups      int
	errors    map[string]int
	polls     atomic.Int64
}

func newStats() *stats {
	return &stats{published: map[string]time.Time{}, lastSeen: map[string]time.Time{}, count: map[string]int{}, errors: map[string]int{}}
}

func (s *stats) fail(kind string) {
	s.mu.Lock()
	s.errors[kind]++
	s.mu.Unlock()
}

type message struct {
	Seq  uint64 `json:"seq"`
	Data string `json:"data"`
}

// run performs one load run and returns its measurements.
func run(ctx context.Context, cfg config, progress io.Writer) (result, error) {
	if err := checkLoopback(cfg.Target); err != nil {
		return result{}, err
	}
	st := newStats()
	clients := newClients(cfg)
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()

	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	var wg sync.WaitGroup
	received := make([]atomic.Int64, cfg.Subscribers) // messages of this run each subscriber has
	for i := range cfg.Subscribers {
		wg.Go(func() { subscribe(subCtx, clients[i%len(clients)], cfg.Target, &received[i], st) })
	}
	if !sleep(ctx, cfg.Warmup) {
		return result{}, ctx.Err()
	}

	var rss int64
	if cfg.ServerPID > 0 {
		var err error
		if rss, err = residentBytes(cfg.ServerPID); err != nil {
			return result{}, err
		}
	}
	published := publish(ctx, clients[0], cfg, st, progress)
	// Wait for every subscriber to reach the last message, or the grace.
	deadline := time.Now().Add(cfg.Grace)
	for time.Now().Before(deadline) && !allReached(received, int64(published)) {
		if !sleep(ctx, 10*time.Millisecond) {
			break
		}
	}
	stopSubs()
	wg.Wait()
	res := st.result(cfg.Subscribers, published)
	res.ServerRSSBytes = rss
	return res, nil
}

// residentBytes reads a process's resident set size from /proc.
func residentBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if n, _ := fmt.Sscanf(line, "VmRSS: %d kB", &kb); n == 1 {
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func allReached(received []atomic.Int64, published int64) bool {
	for i := range received {
		if received[i].Load() < published {
			return false
		}
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// newClients makes one HTTP client per source address (HTTP/1.1), or one
// h2c client, whose connections carry many waiting requests each.
func newClients(cfg config) []*http.Client {
	if cfg.H2C {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		return []*http.Client{{Transport: &http.Transport{Protocols: &p}}}
	}
	n := max(cfg.SourceIPs, 1)
	clients := make([]*http.Client, n)
	for i := range clients {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%254))}}
		clients[i] = &http.Client{Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: cfg.Subscribers,
		}}
	}
	return clients
}

// subscribe long-polls with since= until ctx ends, recording deliveries.
func subscribe(ctx context.Context, client *http.Client, target string, received *atomic.Int64, st *stats) {
	seen := map[uint64]bool{}
	var cursor uint64
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target+"/subscribe?since="+strconv.FormatUint(cursor, 10), nil)
		st.polls.Add(1)
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				st.fail("connect")
				sleep(ctx, 100*time.Millisecond)
			}
			continue
		}
		var msgs []message
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable:
			st.fail("503")
		case resp.StatusCode != http.StatusOK:
			st.fail(strconv.Itoa(resp.StatusCode))
		default:
			if err := json.NewDecoder(resp.Body).Decode(&msgs); err != nil && ctx.Err() == nil {
				st.fail("decode")
			}
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		now := time.Now()
		st.mu.Lock()
		for _, m := range msgs {
			cursor = max(cursor, m.Seq)
			sent, ours := st.published[m.Data]
			if !ours {
				continue // from before this run, or not yet acknowledged to the publisher
			}
			if seen[m.Seq] {
				st.dups++
				continue
			}
			seen[m.Seq] = true
			st.count[m.Data]++
			st.lastSeen[m.Data] = now
			st.latencies = append(st.latencies, now.Sub(sent))
			received.Add(1)
		}
		st.mu.Unlock()
	}
}

// publish posts messages carrying their send time at cfg.Rate for
// cfg.Duration, and returns how many were accepted.
func publish(ctx context.Context, client *http.Client, cfg config, st *stats, progress io.Writer) int {
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.Now().Add(cfg.Duration)
	lastReport := time.Now()
	n := 0
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
		}
		sent := time.Now()
		payload := strconv.FormatInt(sent.UnixNano(), 10)
		// Known before it is sent, so that a delivery racing the publish
		// response is counted.
		st.mu.Lock()
		st.published[payload] = sent
		st.mu.Unlock()
		resp, err := client.PostForm(cfg.Target+"/publish", url.Values{"message": {payload}})
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		st.mu.Lock()
		if ok {
			st.order = append(st.order, payload)
		} else {
			delete(st.published, payload)
		}
		st.mu.Unlock()
		if !ok {
			st.fail("publish")
			continue
		}
		n++
		if progress != nil && time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			fmt.Fprintf(progress, "cometload: %d published, %d polls\n", n, st.polls.Load())
		}
	}
	return n
}

func (st *stats) result(subscribers, published int) result {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := result{Subscribers: subscribers, Published: published, Expected: subscribers * published,
		Duplicates: st.dups, Polls: st.polls.Load(), Errors: st.errors}
	var fanouts []time.Duration
	for _, payload := range st.order {
		r.Delivered += st.count[payload]
		if st.count[payload] == subscribers {
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
