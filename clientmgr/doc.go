// Package clientmgr holds suspended continuations by topic and hands them
// the messages published on their topics, without losing any between two
// polls, on one node or on many.
//
// A long-poll handler suspends its request and registers it with the
// client's cursor, the position of the last message the client saw. What
// the topic's history holds after the cursor is delivered at once; what is
// published later joins the request's batch until its next dispatch,
// which reads the batch and answers with the next cursor:
//
//	func poll(w http.ResponseWriter, r *http.Request) {
//		c := continuation.FromRequest(r)
//		if !c.IsInitial() {
//			b := clientmgr.Batches(c)[0]
//			// b.Messages follow the cursor without a gap; b.Complete is false
//			// when the client may have missed some; b.Next is its next cursor.
//			json.NewEncoder(w).Encode(b)
//			return
//		}
//		after, err := clientmgr.ParseCursor(r.URL.Query().Get("cursor"))
//		if err != nil { ... 400 ... }
//		if err := c.Suspend(); err != nil { ... 503 ... }
//		if err := mgr.RegisterCursor(r.Context(), "room:lobby", after, c); err != nil {
//			// Not registered (the Manager closed, too many topics, the broker
//			// unreachable): answer now, since the redispatch would have no
//			// batch to read.
//			w.Header().Set("Retry-After", "1")
//			http.Error(w, err.Error(), http.StatusServiceUnavailable)
//			c.Complete()
//		}
//	}
//
//	mgr.Broadcast(ctx, "room:lobby", []byte("hello"))
//
// # Cursors and epochs
//
// Each topic has a sequence: Seq 1, 2, 3, … with no gaps, under an epoch
// that names the sequence. The epoch changes whenever the sequence starts
// again: the process restarted (with the in-process broker), the topic was
// reclaimed, or the broker's engine lost its data. A Cursor carries both,
// so a cursor from another epoch is never taken at face value: the client
// gets what history there is, with its Batch marked incomplete (Complete
// false), so that the application can say "you may have missed messages".
// The same happens when the cursor is older than the history reaches, or
// ahead of the topic. Cursor.String and ParseCursor give a cursor's one
// token form, for a query parameter or an SSE event id; Message marshals
// to JSON a browser reads directly.
//
// Register and Since, which take a plain Seq, keep the simpler rule: a Seq
// is taken at face value, and one larger than the topic's last (a cursor
// from before a restart) gets the whole history, incomplete.
//
// # The registration rule
//
// Registration is atomic with Broadcast: a message is either in the
// history the registration reads or delivered to the registration, never
// neither. A registration lives from Register until the continuation's
// next dispatch starts, or the request finishes, whichever is first; it
// then ends by itself on every topic. Every message published in that
// window joins the batch (so two that land before the resumed handler runs
// are both in it), and the first resumes the continuation. A message that
// lands after the dispatch started is not in the batch, but it is in the
// history, and the client's next registration, with its cursor, gets it at
// once.
//
// # Brokers and several nodes
//
// A Broker owns the topics' sequences and history; the Manager only holds
// the continuations waiting on this node. A Broadcast goes one way:
// Manager.Broadcast, Broker.Publish (which assigns Epoch and Seq and keeps
// the message), Node.Deliver on every node in Seq order, and the clients
// registered there are resumed. The default broker serves one process;
// package redisbroker shares topics between processes through Redis, so
// that a client may poll any node with its cursor. A broker that does I/O
// is started by Open, which returns its error; Close closes it.
//
// When a delivery does not follow the one before it (a message the broker
// could not deliver, a new epoch), the batches waiting on the topic end
// there and their clients' next registrations read what they lack from the
// history; nothing is skipped silently.
//
// # Bounded memory
//
// Each topic keeps WithHistory messages; Broadcast refuses data larger than
// WithMaxMessageSize; a node holds at most WithMaxTopics topics, and one
// with no subscriber and no message for WithIdleTimeout is reclaimed by
// the Manager's one goroutine. A slow consumer's batch holds at most
// WithMaxBatch messages; the rest wait in the history for its next
// registration. A Broadcast never waits for a client.
//
// # Options
//
// An option's argument means what it says, and a default is what you get
// by not passing the option: a value that cannot be meant (a size below 1,
// a duration of 0 or less, a nil broker or registry) panics in New or Open,
// naming the option.
//
// # Unicast and presence
//
// A topic per client ("user:42") addresses one client; a client may
// register on its own topic and on the rooms it follows in one
// suspension. Count and Topics tell who is waiting where on this node.
package clientmgr
