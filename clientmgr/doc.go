// Package clientmgr holds suspended continuations by topic and fans
// messages out to them, without losing any between two polls.
//
// Every topic keeps its last messages (WithHistory) in a ring indexed by
// Seq, the topic's sequence number: 1, 2, 3, … with no gaps. A long-poll
// handler suspends its request and registers it with the client's cursor,
// the last Seq the client has seen; whatever the topic holds after the
// cursor is delivered at once, and anything broadcast later joins the
// request's batch until its next dispatch, which reads the batch with
// Messages:
//
//	func poll(w http.ResponseWriter, r *http.Request) {
//		c := continuation.FromRequest(r)
//		if !c.IsInitial() {
//			json.NewEncoder(w).Encode(clientmgr.Messages(c)) // the client's next cursor is the last Seq
//			return
//		}
//		if err := c.Suspend(); err != nil { ... }
//		if err := mgr.Register("room:lobby", cursor, c); err != nil { ... }
//	}
//
//	mgr.Broadcast(ctx, "room:lobby", []byte("hello"))
//
// # The registration rule
//
// Register is atomic with Broadcast: a message is either in the history the
// registration looks at or delivered to the registration, never neither. A
// registration lives from Register until the continuation's next dispatch
// starts, or the request finishes, whichever is first; it then ends by
// itself on every topic. Every Broadcast in that window joins the batch
// (so two broadcasts that land before the resumed handler runs are both in
// Messages), and the first resumes the continuation. A message that lands
// after the dispatch started is not in the batch, but it is in the history,
// and the client's next poll, registering with its cursor, gets it at once.
//
// # Bounded memory
//
// Each topic keeps WithHistory messages; Broadcast refuses data larger than
// WithMaxMessageSize; at most WithMaxTopics topics exist at once, and a
// topic with no subscriber and no message for WithIdleTimeout is reclaimed
// by the Manager's one goroutine. A slow consumer's batch holds at most
// WithMaxBatch messages, oldest dropped first (Dropped counts them, and the
// cursor brings them back from the history). A Broadcast never waits for a
// client.
//
// # Unicast and presence
//
// A topic per client ("user:42") addresses one client; a client may
// register on its own topic and on the rooms it follows in one
// suspension. Count and Topics tell who is waiting where.
//
// # Several nodes
//
// Publishing goes through a Broker (WithBroker). The default serves one
// process; a multi-node broker assigns each topic's Seq in a shared engine
// and hands every message to every node, which delivers it to its own
// subscribers, so Seq and cursors mean the same on every node.
package clientmgr
