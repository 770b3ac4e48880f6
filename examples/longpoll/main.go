// Command longpoll is the classic Comet pair as a runnable server, built on
// cometkit's servlet container, continuations and client manager:
// GET /subscribe waits for the next message and answers it as text/plain
// (204 if none comes before the timeout); GET /subscribe?since=N answers a
// JSON array of every message after Seq N ([] on timeout), so a client that
// re-polls with its last Seq misses nothing; GET /events streams the same
// messages as server-sent events (id: Seq, resumable with Last-Event-ID or
// ?since=N); POST /publish with form field message (or GET
// /publish?message=...) wakes every waiting subscriber and answers "ok".
//
//	go run ./examples/longpoll -addr :8080
//	curl localhost:8080/subscribe &
//	curl -d message=hello localhost:8080/publish
//	curl 'localhost:8080/subscribe?since=0'
//	curl -N localhost:8080/events
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
	workers := flag.Int("workers", 0, "dispatch workers (0: the default, 256 per CPU)")
	queue := flag.Int("queue", continuation.DefaultQueueSize, "new requests that may wait for a worker (size it to the clients one broadcast wakes: they all re-poll at once)")
	timeout := flag.Duration("timeout", 25*time.Second, "how long a subscriber waits (proxies often cut at 30s)")
	history := flag.Int("history", clientmgr.DefaultHistory, "messages kept for ?since= cursors")
	drain := flag.Duration("drain", 10*time.Second, "how long shutdown waits for requests to finish")
	headerTimeout := flag.Duration("header-timeout", 10*time.Second, "how long a client may take to send its request headers (slowloris)")
	certFile := flag.String("tls-cert", "", "serve HTTPS (HTTP/2 and HTTP/1.1) with this certificate (PEM); needs -tls-key")
	keyFile := flag.String("tls-key", "", "the certificate's private key (PEM)")
	flag.Parse()

	if err := run(*addr, *workers, *queue, *history, *timeout, *drain, *headerTimeout, *certFile, *keyFile); err != nil {
		slog.Error("longpoll", "err", err)
		os.Exit(1)
	}
}

func run(addr string, workers, queue, history int, timeout, drain, headerTimeout time.Duration, certFile, keyFile string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mgr := clientmgr.New(clientmgr.WithHistory(history))
	defer mgr.Close()
	container, err := newContainer(mgr, continuation.WithWorkers(workers), continuation.WithQueueSize(queue), continuation.WithDefaultTimeout(timeout))
	if err != nil {
		return err
	}
	// HTTP/1.1, and HTTP/2 (cleartext, or over TLS) for clients that speak
	// it, where one connection carries many waiting requests.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Addr:              addr,
		Handler:           container,
		ReadHeaderTimeout: headerTimeout,
		Protocols:         &protocols,
	}
	// http.Server.Shutdown does not wake parked requests; the container's
	// Dispatcher does.
	srv.RegisterOnShutdown(func() { _ = container.Shutdown(context.Background()) })

	errc := make(chan error, 1)
	go func() {
		if certFile != "" || keyFile != "" {
			errc <- srv.ListenAndServeTLS(certFile, keyFile)
			return
		}
		errc <- srv.ListenAndServe()
	}()
	slog.Info("longpoll listening", "addr", addr)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
