// Package hub serves a [clientmgr.Manager]'s topics to browsers and other
// clients over one HTTP path, by WebSocket, server-sent events or
// long-polling, all speaking one JSON wire format: subscribe to topics,
// each from a cursor; receive messages with their topic, epoch, seq, time,
// data and cursor; be told when messages were missed; publish when the
// application allows it. docs/hub.md specifies the wire format, enough to
// write a client for any of the three transports, and gives the proxy
// settings for each.
//
//	mgr := clientmgr.New()
//	h := hub.New(mgr,
//		hub.WithAuthorizer(hub.AuthorizerFunc(func(r *http.Request) (hub.Access, error) {
//			user, err := session(r) // a cookie, a header, or a token in the query
//			if err != nil {
//				return nil, err // 403, or the close code 4403
//			}
//			return hub.Grant{
//				ID:        user.ID,
//				Subscribe: func(topic string) bool { return user.MayRead(topic) },
//				Publish:   func(topic string) bool { return strings.HasPrefix(topic, "room:") },
//			}, nil
//		})),
//	)
//	http.Handle("/hub/", h) // the endpoint /hub/, the browser client /hub/client.js
//	srv.RegisterOnShutdown(h.Drain)
//
// The application publishes with the Manager (mgr.Broadcast), and every
// client subscribed to the topic, on any transport, receives the message.
//
// # Transports
//
// A GET with Upgrade: websocket is a WebSocket (package
// github.com/coder/websocket does the protocol): text messages, one frame
// each way. A GET with Accept: text/event-stream (or ?transport=sse) is an
// event stream for the topics of its URL, whose event ids carry every
// topic's cursor, so that a reconnecting EventSource resumes them all. A
// POST is a long-poll: an array of frames in (subscriptions, publishes),
// an array out, the request suspended until one of its subscriptions has
// something. A long-poll that only waits may be a GET with its topics and
// cursors in the URL (?transport=longpoll), which a proxy may send again
// to another node; the browser client polls that way once subscribed. Long-polls and
// event streams are ordinary continuation handlers, on the hub's
// Dispatcher ([WithDispatcher]); a WebSocket's handshake is one too, and
// the hub then owns the connection: one goroutine reads it, one writes
// it.
//
// # Who may do what
//
// An [Authorizer] sees the request that opens each connection (cookies,
// headers, the query) and returns the client's [Access]: its identity,
// and which topics it may subscribe to and publish on. Without one, any
// client may subscribe to any topic, and none may publish. A
// [PublishHook] may change or refuse the data of an allowed publish.
// Browser requests from other origins are refused unless [WithOrigins]
// names them.
//
// # Limits
//
// Every limit ends in an answer the client can read: topics per connection
// ([WithMaxTopics]: the error too_many_topics), the size of what a client
// sends ([WithMaxMessageSize]: 413, or the close code 1009), publishes per
// client ([WithPublishRate]: rate_limited, with the time to wait),
// connections per address across transports ([WithMaxConnsPerAddr]: 429,
// or 4029), and frames waiting for a WebSocket ([WithSendQueue]: a slow
// consumer is closed with 4008, never sent part of what it is owed; it
// reconnects and resumes from its cursors). A frame the hub cannot read
// ends its connection or request with bad_request; nothing else is
// affected.
//
// # Shutdown
//
// [Hub.Drain] closes every WebSocket with 1001 and drains the Dispatcher,
// so that streams end and long-polls answer; it returns at once, as
// [http.Server.RegisterOnShutdown] wants. [Hub.Shutdown] waits as well.
// Clients reconnect with their back-off and resume from their cursors; the
// Manager is the application's to close.
//
// # Metrics
//
// [WithMetrics] registers cometkit_hub_connections (gauge, label transport
// = websocket, sse or longpoll), cometkit_hub_refusals_total (counter,
// label reason = an error code, or origin) and
// cometkit_hub_slow_consumers_total (counter, label transport = websocket
// or sse).
//
// # Options
//
// An option's argument means what it says, and a default is what you get
// by not passing the option: a value that cannot be meant (a size or rate
// below 1, a duration of 0 or less, a nil hook, a malformed origin) makes
// New panic with a message naming the option.
package hub
