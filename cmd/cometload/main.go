// Command cometload is a load generator for long-polls, like wrk for
// Comet: N subscribers long-poll a server with since= cursors while a
// publisher sends messages carrying their send time, and it reports the
// delivered fraction, duplicates, delivery latency, fan-out time and errors,
// as a summary and one JSON line. It talks only to loopback addresses.
//
//	go run ./examples/longpoll -addr 127.0.0.1:8080 &
//	go run ./cmd/cometload -target http://127.0.0.1:8080 -n 1000 -rate 5 -duration 10s
//
// The target speaks the longpoll example's protocol: GET /subscribe?since=N
// answers a JSON array of {seq, data}; POST /publish takes form field
// message.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.Target, "target", "http://127.0.0.1:8080", "server base URL (loopback only)")
	flag.IntVar(&cfg.Subscribers, "n", 100, "concurrent long-poll subscribers")
	flag.IntVar(&cfg.SourceIPs, "source-ips", 1, "spread HTTP/1.1 connections over 127.0.0.1..127.0.0.N (each address has ~28k ports)")
	flag.BoolVar(&cfg.H2C, "h2c", false, "use cleartext HTTP/2: many waiting requests per connection")
	flag.Float64Var(&cfg.Rate, "rate", 5, "messages published per second")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish")
	flag.DurationVar(&cfg.Warmup, "warmup", time.Second, "time for subscribers to connect before publishing")
	flag.DurationVar(&cfg.Grace, "grace", 10*time.Second, "time after publishing for the last deliveries")
	flag.IntVar(&cfg.ServerPID, "pid", 0, "the server's pid, to report its resident memory with every subscriber waiting")
	quiet := flag.Bool("quiet", false, "no progress on stderr")
	flag.Parse()
	if cfg.Subscribers < 1 || cfg.Rate <= 0 || cfg.Duration <= 0 {
		fmt.Fprintln(os.Stderr, "cometload: -n, -rate and -duration must be positive")
		os.Exit(2)
	}
	raiseFileLimit()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := os.Stderr
	if *quiet {
		progress = nil
	}
	res, err := run(ctx, cfg, progress)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cometload:", err)
		os.Exit(1)
	}
	fmt.Printf("subscribers %d, published %d, delivered %d of %d (%.4f), duplicates %d\n",
		res.Subscribers, res.Published, res.Delivered, res.Expected, res.DeliveredFraction, res.Duplicates)
	fmt.Printf("latency p50 %.1f ms, p99 %.1f ms; fan-out p50 %.1f ms, p99 %.1f ms; polls %d; errors %v\n",
		res.LatencyP50Ms, res.LatencyP99Ms, res.FanoutP50Ms, res.FanoutP99Ms, res.Polls, res.Errors)
	if res.ServerRSSBytes > 0 {
		fmt.Printf("server RSS %.1f MiB with %d waiting (%.1f KiB each)\n", float64(res.ServerRSSBytes)/(1<<20),
			res.Subscribers, float64(res.ServerRSSBytes)/float64(res.Subscribers)/1024)
	}
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
}

// raiseFileLimit lifts the soft open-file limit to the hard one (Go does
// this at start-up too; this makes it explicit and reports the limit).
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
