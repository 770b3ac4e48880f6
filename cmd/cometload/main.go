// Command cometload is a load generator for Comet servers, like wrk for
// long-polls and event streams. N subscribers wait on the server while a
// publisher sends messages, and it reports the delivered fraction,
// duplicates, delivery latency (publish to receipt), fan-out time (publish
// to the last receipt), errors by kind and, given the server's pid, its
// memory per waiting subscriber (before the traffic and after it) and CPU
// per delivery: as a summary and one JSON line. With -sigquit it then
// sends a Go server SIGQUIT, which prints the stack of every goroutine it
// has with every subscriber waiting (bench/run.sh counts them). It talks
// only to loopback addresses.
//
//	go run ./examples/longpoll -addr 127.0.0.1:8080 &
//	go run ./cmd/cometload -target http://127.0.0.1:8080 -n 1000 -rate 5 -duration 10s
//
// The target speaks the longpoll example's protocol: GET /subscribe?since=C
// answers a JSON batch {"messages":[{"data":…}],"next":C'} (-mode since,
// the default); GET
// /subscribe answers the next message as text (-mode classic); GET /events
// is a server-sent event stream (-mode sse); POST /publish takes form field
// message. The modes ws, hub-sse and hub-poll speak package hub's wire
// format instead, to a hub at /hub/ following the topic "load", over a
// WebSocket, an event stream or long-polls; hub/internal/loadserver is such
// a server.
//
// Transports: HTTP/1.1, one connection per waiting request, spread over
// -source-ips loopback addresses because each has about 28,000 ephemeral
// ports; -h2c, or an https:// target, for HTTP/2 with many waiting requests
// per connection, which is how to go beyond the open-file limit.
//
// Publishing: -rate ticks per second for -duration, -burst messages at each
// tick; or -rounds single broadcasts, each sent once every subscriber has
// the one before and is waiting again, to time one broadcast to all.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.Target, "target", "http://127.0.0.1:8080", "server base URL, http:// or https:// (loopback only)")
	flag.IntVar(&cfg.Subscribers, "n", 100, "concurrent subscribers")
	flag.StringVar(&cfg.Mode, "mode", modeSince, "subscriber protocol: since (long-poll with a cursor), classic (long-poll without) or sse; or the hub's wire format at /hub/: ws, hub-sse or hub-poll")
	flag.IntVar(&cfg.SourceIPs, "source-ips", 1, "spread HTTP/1.1 connections over 127.0.0.1..127.0.0.N (each address has ~28k ports)")
	flag.BoolVar(&cfg.H2C, "h2c", false, "use cleartext HTTP/2 for an http:// target: many waiting requests per connection")
	flag.IntVar(&cfg.Streams, "streams", 200, "HTTP/2: waiting requests per connection (Go servers allow 250 by default)")
	flag.BoolVar(&cfg.Insecure, "insecure", false, "https:// target: accept a self-signed certificate")
	flag.Float64Var(&cfg.Rate, "rate", 5, "publishing ticks per second")
	flag.IntVar(&cfg.Burst, "burst", 1, "messages published back to back at each tick")
	flag.IntVar(&cfg.Rounds, "rounds", 0, "instead of -rate: this many single broadcasts, each to every subscriber waiting")
	flag.DurationVar(&cfg.Settle, "settle", 200*time.Millisecond, "pause once every subscriber is waiting, for the server to hold the last ones")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish at -rate")
	flag.DurationVar(&cfg.Warmup, "warmup", time.Minute, "the longest to wait for every subscriber to be waiting")
	flag.DurationVar(&cfg.Grace, "grace", 10*time.Second, "the longest to wait for the last deliveries")
	flag.IntVar(&cfg.ServerPID, "pid", 0, "the server's pid, to report its memory per waiting subscriber and CPU per delivery")
	flag.BoolVar(&cfg.QuitServer, "sigquit", false, "at the end, with every subscriber waiting, send the server (-pid) SIGQUIT: a Go server prints every goroutine's stack and exits")
	quiet := flag.Bool("quiet", false, "no progress on stderr")
	flag.Parse()

	limit := raiseFileLimit()
	if !cfg.H2C && strings.HasPrefix(cfg.Target, "http://") && uint64(cfg.Subscribers)+64 > limit {
		fail(fmt.Errorf("-n %d over HTTP/1.1 needs as many open files, and the limit is %d: use -h2c", cfg.Subscribers, limit))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := os.Stderr
	if *quiet {
		progress = nil
	}
	res, err := run(ctx, cfg, progress)
	if err != nil {
		fail(err)
	}
	fmt.Printf("%s over %s: %d subscribers (%d waiting at the start), published %d, delivered %d of %d (%.4f), duplicates %d\n",
		res.Mode, res.Transport, res.Subscribers, res.Waiting, res.Published, res.Delivered, res.Expected, res.DeliveredFraction, res.Duplicates)
	fmt.Printf("latency p50 %.1f ms, p99 %.1f ms; fan-out p50 %.1f ms, p99 %.1f ms; requests %d; errors %v\n",
		res.LatencyP50Ms, res.LatencyP99Ms, res.FanoutP50Ms, res.FanoutP99Ms, res.Polls, res.Errors)
	if u := res.Server; u != nil {
		fmt.Printf("server: RSS %.1f MiB idle, %.1f MiB loaded (%.1f KiB per waiting subscriber), %.1f MiB after (%.1f KiB); CPU %.2f s (%.1f ms per 10k deliveries)\n",
			float64(u.IdleRSSBytes)/(1<<20), float64(u.LoadedRSSBytes)/(1<<20), u.HeldBytes/1024,
			float64(u.AfterRSSBytes)/(1<<20), u.AfterBytes/1024, u.CPUSeconds, u.CPUMsPer10k)
	}
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cometload:", err)
	os.Exit(1)
}

// raiseFileLimit lifts the soft open-file limit to the hard one (Go does
// this at start-up too; this makes it explicit) and returns the limit.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1 << 20 // unknown: let the run find out
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
			syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	}
	return lim.Cur
}
