// Package serve runs the examples' servers as a server of waiting clients
// should run: with timeouts that bound what a client can hold, waiting
// clients detached from net/http, and a graceful shutdown on SIGINT or
// SIGTERM that answers every waiting client, cut short by a second signal.
package serve

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/cometkit/cometkit/continuation"
)

// Config is what the examples' servers share: where to listen, the
// timeouts that bound what a client can hold, and how long a shutdown may
// take. The server has no WriteTimeout: a long-poll's answer or an event
// stream is written long after the request came. The handlers bound their
// own writes instead, with WriteTimeout (internal/respond).
type Config struct {
	Addr          string
	HeaderTimeout time.Duration // a client that does not finish its headers (slowloris)
	ReadTimeout   time.Duration // the whole request, body included
	WriteTimeout  time.Duration // one answer's writes: a client that does not read holds a worker until then
	IdleTimeout   time.Duration // a keep-alive connection between two requests
	Drain         time.Duration // how long a shutdown waits for requests to finish
	Workers       int           // dispatches running at once
	Queue         int           // new requests that may wait for a worker
}

// Flags registers the command-line flags for c on fs, with the defaults.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "localhost:8080", "listen address (\":8080\" listens on every interface)")
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", 10*time.Second, "how long a client may take to send its request headers")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", 30*time.Second, "how long a client may take to send a whole request")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "how long one answer may take to leave: a client that does not read holds the worker writing to it until then")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection is kept")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "how long shutdown waits for requests to finish")
	fs.IntVar(&c.Workers, "workers", continuation.DefaultWorkersPerCPU*runtime.GOMAXPROCS(0), "dispatches running at once")
	fs.IntVar(&c.Queue, "queue", continuation.DefaultQueueSize, "new requests that may wait for a worker (size it to the clients one broadcast wakes: they all poll again at once)")
}

// Dispatch returns the Dispatcher's options for c's workers and queue.
func (c Config) Dispatch() []continuation.Option {
	return []continuation.Option{continuation.WithWorkers(c.Workers), continuation.WithQueueSize(c.Queue)}
}

// Server returns an http.Server for h with c's address and timeouts.
func (c Config) Server(h http.Handler) *http.Server {
	return &http.Server{
		Addr:              c.Addr,
		Handler:           h,
		ReadHeaderTimeout: c.HeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
}

// A Drainer is what stands between the server and its waiting clients (a
// continuation Dispatcher, a servlet Container, a middleware): Drain starts
// answering them and returns; Shutdown waits until they have all finished.
type Drainer interface {
	Drain()
	Shutdown(ctx context.Context) error
}

// Run serves srv on srv.Addr until SIGINT or SIGTERM, over TLS when
// certFile and keyFile are given, then shuts down: d drains (every waiting
// client is answered) while the server stops accepting and waits for its
// requests, for at most drain. A second signal stops at once. Run returns
// nil after a complete graceful shutdown.
//
// It serves with detaching (continuation.ListenAndServe): a client that
// waits over HTTP/1.1 holds no goroutine and none of net/http's buffers
// while it waits, and d's Shutdown, which Run waits for, covers those the
// server's Shutdown does not see.
func Run(srv *http.Server, certFile, keyFile string, d Drainer, drain time.Duration, log *slog.Logger) error {
	listen := func() error { return continuation.ListenAndServe(srv) }
	if certFile != "" || keyFile != "" {
		listen = func() error { return continuation.ListenAndServeTLS(srv, certFile, keyFile) }
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	// http.Server.Shutdown does not wake requests that wait; d does. It must
	// not wait here (RegisterOnShutdown's functions run while Shutdown does).
	srv.RegisterOnShutdown(d.Drain)

	served := make(chan error, 1)
	go func() { served <- listen() }()
	log.Info("listening", "addr", srv.Addr)
	select {
	case err := <-served:
		return err
	case sig := <-signals:
		log.Info("shutting down; signal again to stop now", "signal", sig.String(), "drain", drain)
	}

	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	go func() {
		select {
		case sig := <-signals:
			log.Warn("stopping now", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	err = errors.Join(err, d.Shutdown(ctx))
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}
