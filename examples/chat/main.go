// Command chat is a chat server on cometkit: rooms, nicknames, join and
// leave notices, the last 50 messages on joining, who is online, and two
// transports the page chooses between, long-poll and an event stream
// (SSE), both catching up from the client's cursor so no message is lost.
//
//	go run ./examples/chat            # then open http://localhost:8080
//
// With -redis, it is one node of several sharing rooms through Redis:
//
//	go run ./examples/chat -addr :8081 -redis redis://127.0.0.1:6379/0 &
//	go run ./examples/chat -addr :8082 -redis redis://127.0.0.1:6379/0
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	workers := flag.Int("workers", 0, "dispatch workers (0: 256 per CPU)")
	queue := flag.Int("queue", continuation.DefaultQueueSize, "new requests that may wait for a worker")
	timeout := flag.Duration("timeout", 20*time.Second, "how long a poll waits (keep it under the 30 s proxies allow)")
	history := flag.Int("history", clientmgr.DefaultHistory, "messages kept per room")
	drain := flag.Duration("drain", 10*time.Second, "how long shutdown waits for requests to finish")
	headerTimeout := flag.Duration("header-timeout", 10*time.Second, "how long a client may take to send its request headers (slowloris)")
	redisURL := flag.String("redis", "", "share rooms with other nodes through this Redis (redis://host:port/db)")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := config{
		pollTimeout: *timeout,
		history:     *history,
		dispatch:    []continuation.Option{continuation.WithWorkers(*workers), continuation.WithQueueSize(*queue)},
		logger:      logger,
		redisURL:    *redisURL,
	}
	if err := run(*addr, cfg, *drain, *headerTimeout); err != nil {
		logger.Error("chat", "err", err)
		os.Exit(1)
	}
}

func run(addr string, cfg config, drain, headerTimeout time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	s, err := newServer(cfg)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: s, ReadHeaderTimeout: headerTimeout}
	// http.Server.Shutdown does not wake waiting clients; the server's
	// continuations do, so every one is answered before the process exits.
	srv.RegisterOnShutdown(func() { s.mw.Shutdown(context.Background()) })

	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	cfg.logger.Info("chat listening", "addr", addr)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	cfg.logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if err != nil {
		srv.Close()
	}
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return errors.Join(err, s.Close(shutdownCtx))
}
