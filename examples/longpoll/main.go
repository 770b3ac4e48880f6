// Command longpoll is the classic Comet pair as a runnable server, built on
// cometkit's servlet container, continuations and client manager:
//
//	GET  /subscribe           the next message published, as text/plain
//	                          (204 if none comes before the timeout)
//	GET  /subscribe?since=C   a JSON batch of every message after cursor C:
//	                          {"messages":[…],"complete":true,"next":"…"};
//	                          poll again with since=next and miss nothing
//	                          (complete=false: some may have been missed)
//	GET  /events              the same messages as server-sent events, each
//	                          id a cursor, resumable with Last-Event-ID or
//	                          ?since=C; a "missed" event when C is stale
//	POST /publish             form field message; wakes every subscriber
//
//	go run ./examples/longpoll
//	curl localhost:8080/subscribe &
//	curl -d message=hello localhost:8080/publish
//	curl 'localhost:8080/subscribe?since=0'
//	curl -N localhost:8080/events
//
// A publish from another site's page is refused (cross-origin protection);
// curl and other clients that are not browsers are not affected.
package main

import (
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/examples/internal/serve"
	"github.com/cometkit/cometkit/servlet"
)

func main() {
	var cfg serve.Config
	cfg.Flags(flag.CommandLine)
	timeout := flag.Duration("timeout", 25*time.Second, "how long a subscriber waits (proxies often cut at 30s)")
	history := flag.Int("history", clientmgr.DefaultHistory, "messages kept for ?since= cursors")
	certFile := flag.String("tls-cert", "", "serve HTTPS (HTTP/2 and HTTP/1.1) with this certificate (PEM); needs -tls-key")
	keyFile := flag.String("tls-key", "", "the certificate's private key (PEM)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	mgr := clientmgr.New(clientmgr.WithHistory(*history))
	container, err := newContainer(mgr, cfg.WriteTimeout, append(cfg.Dispatch(),
		continuation.WithDefaultTimeout(*timeout), continuation.WithLogger(log))...)
	if err == nil {
		err = run(cfg, container, *certFile, *keyFile, log)
	}
	if err = errors.Join(err, mgr.Close()); err != nil {
		log.Error("longpoll", "err", err)
		os.Exit(1)
	}
}

func run(cfg serve.Config, container *servlet.Container, certFile, keyFile string, log *slog.Logger) error {
	srv := cfg.Server(http.NewCrossOriginProtection().Handler(container))
	// HTTP/1.1, and HTTP/2 (cleartext, or over TLS) for clients that speak
	// it, where one connection carries many waiting requests.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Protocols = &protocols
	return serve.Run(srv, certFile, keyFile, container, cfg.Drain, log)
}
