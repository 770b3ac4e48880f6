package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/continuation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// A node is one cometkit server: a Manager on its own Redis broker and
// client, serving long-polls over HTTP. A poll registers on one topic with
// the client's cursor and answers with the Batch as JSON.
type node struct {
	mgr    *clientmgr.Manager
	broker *redisbroker.Broker
	reg    *prometheus.Registry
	url    string
}

// newNode starts a node on the Redis at addr, with a client of its own.
func newNode(t *testing.T, addr string, history int) *node {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() }) // after the node's own cleanup
	return startNode(t, rdb, history)
}

// startNode starts a node on rdb, which the caller closes.
func startNode(t *testing.T, rdb redis.UniversalClient, history int) *node {
	t.Helper()
	reg := prometheus.NewRegistry()
	b := redisbroker.New(rdb, redisbroker.WithMetrics(reg), redisbroker.WithLogger(quiet))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	mgr, err := clientmgr.Open(ctx, clientmgr.WithBroker(b), clientmgr.WithHistory(history))
	require.NoError(t, err)
	n := &node{mgr: mgr, broker: b, reg: reg}
	d := continuation.NewDispatcher(http.HandlerFunc(n.serve),
		continuation.WithDefaultTimeout(30*time.Second), continuation.WithLogger(quiet))
	srv := httptest.NewServer(d)
	n.url = srv.URL
	t.Cleanup(func() {
		d.Shutdown(context.Background())
		srv.Close()
		mgr.Close()
	})
	return n
}

func (n *node) serve(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if !c.IsInitial() {
		batches := clientmgr.Batches(c)
		if len(batches) != 1 {
			http.Error(w, fmt.Sprintf("%d batches", len(batches)), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(batches[0])
		return
	}
	cursor, err := clientmgr.ParseCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := c.Suspend(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if err := n.mgr.RegisterCursor(r.Context(), r.URL.Query().Get("topic"), cursor, c); err != nil {
		c.Complete()
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}
}

// errUnavailable is a 503: the node could not read Redis.
type errUnavailable string

func (e errUnavailable) Error() string { return string(e) }

// poll long-polls topic on n from the cursor.
func (n *node) poll(ctx context.Context, topic string, cursor clientmgr.Cursor) (clientmgr.Batch, error) {
	q := url.Values{"topic": {topic}, "cursor": {cursor.String()}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return clientmgr.Batch{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return clientmgr.Batch{}, err
	case resp.StatusCode == http.StatusServiceUnavailable:
		return clientmgr.Batch{}, errUnavailable(body)
	case resp.StatusCode != http.StatusOK:
		return clientmgr.Batch{}, fmt.Errorf("%s: %s", resp.Status, body)
	}
	var b clientmgr.Batch
	err = json.Unmarshal(body, &b)
	return b, err
}

// metric sums the samples of a counter (over its labels) on n's registry.
func (n *node) metric(name string) float64 {
	families, _ := n.reg.Gather()
	for _, f := range families {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// last is the position of the last message delivered to n on topic.
func (n *node) last(topic string) clientmgr.Cursor {
	for _, info := range n.mgr.Topics(topic) {
		if info.Name == topic {
			return info.Last
		}
	}
	return clientmgr.Cursor{}
}

func awaitLast(t *testing.T, n *node, topic string, want clientmgr.Cursor) {
	t.Helper()
	require.Eventually(t, func() bool { return n.last(topic) == want }, 10*time.Second, 2*time.Millisecond,
		"the node has %v, not %v", n.last(topic), want)
}

func awaitMetric(t *testing.T, n *node, name string, atLeast float64) {
	t.Helper()
	require.Eventually(t, func() bool { return n.metric(name) >= atLeast }, 10*time.Second, 5*time.Millisecond,
		"%s is %v", name, n.metric(name))
}

// published is every message Broadcast acknowledged, by position, and
// the data of those in flight or failed, whose position is unknown (a
// Broadcast that timed out may still have been stored). A position may
// hold two messages when Redis handed a Seq out again (restored from an
// older snapshot): a client may get either, never another.
type published struct {
	mu      sync.Mutex
	at      map[clientmgr.Cursor][]string
	pending map[string]bool
}

func newPublished() *published {
	return &published{at: map[clientmgr.Cursor][]string{}, pending: map[string]bool{}}
}

// attempt notes data about to be published.
func (p *published) attempt(data string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending[data] = true
}

// add notes a message Broadcast acknowledged.
func (p *published) add(msg clientmgr.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pending, string(msg.Data))
	p.at[msg.Cursor()] = append(p.at[msg.Cursor()], string(msg.Data))
}

// has reports whether msg may be what was published at its position.
func (p *published) has(msg clientmgr.Message) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if datas, ok := p.at[msg.Cursor()]; ok {
		return slices.Contains(datas, string(msg.Data))
	}
	return p.pending[string(msg.Data)]
}

func (p *published) broadcast(t *testing.T, n *node, topic, data string) clientmgr.Message {
	t.Helper()
	p.attempt(data)
	msg, err := n.mgr.Broadcast(t.Context(), topic, []byte(data))
	require.NoError(t, err)
	p.add(msg)
	return msg
}

// A client polls one topic with its cursor, on whichever node, and checks
// each answer: what a complete batch holds follows the cursor with no gap
// and nothing twice; every message is one that was published under its
// epoch and Seq, so never a zero-valued one, nor an old one under a new
// position. An incomplete batch is the client being told it may have
// missed messages.
type client struct {
	topic  string
	pub    *published
	cursor clientmgr.Cursor
	got    []clientmgr.Message
	told   int // incomplete batches
}

func newClient(topic string, pub *published, cursor clientmgr.Cursor) *client {
	return &client{topic: topic, pub: pub, cursor: cursor}
}

// take checks b and moves the client's cursor on; false if b is wrong.
func (c *client) take(t *testing.T, b clientmgr.Batch) bool {
	t.Helper()
	ok := assert.Equal(t, c.topic, b.Topic)
	at := c.cursor
	if !b.Complete {
		c.told++
	} else if len(b.Messages) == 0 {
		ok = assert.Equal(t, c.cursor, b.Next, "an empty complete batch stays at the cursor") && ok
	}
	for i, msg := range b.Messages {
		ok = assert.True(t, c.pub.has(msg), "message %v %q was published so", msg.Cursor(), msg.Data) && ok
		ok = assert.Equal(t, c.topic, msg.Topic) && ok
		if i > 0 || b.Complete {
			ok = assert.True(t, follows(msg, at), "%v follows %v in a complete batch, or in one batch", msg.Cursor(), at) && ok
		}
		at = msg.Cursor()
	}
	if len(b.Messages) > 0 {
		ok = assert.Equal(t, at, b.Next, "Next is the last message's position") && ok
	}
	c.got = append(c.got, b.Messages...)
	c.cursor = b.Next
	return ok
}

func follows(msg clientmgr.Message, at clientmgr.Cursor) bool {
	return msg.Epoch != 0 && msg.Seq == at.Seq+1 && (at.Epoch == 0 || at.Epoch == msg.Epoch)
}

// poll polls n once and takes the answer.
func (c *client) poll(t *testing.T, n *node) clientmgr.Batch {
	t.Helper()
	b, err := n.poll(t.Context(), c.topic, c.cursor)
	require.NoError(t, err)
	require.True(t, c.take(t, b))
	return b
}

// polled is the answer to an asynchronous poll.
type polled struct {
	batch clientmgr.Batch
	err   error
}

// waitOn starts a poll on n and returns once n holds it, waiting for a
// message; take its answer with c.answer.
func (c *client) waitOn(t *testing.T, n *node) <-chan polled {
	t.Helper()
	registered := n.mgr.Count(c.topic)
	out := make(chan polled, 1)
	cursor := c.cursor
	go func() {
		b, err := n.poll(context.Background(), c.topic, cursor)
		out <- polled{b, err}
	}()
	require.Eventually(t, func() bool { return n.mgr.Count(c.topic) > registered }, 10*time.Second, 2*time.Millisecond,
		"the poll on %q waits on the node", c.topic)
	return out
}

// answer takes an answer that must be a batch, and returns it.
func (c *client) answer(t *testing.T, p polled) clientmgr.Batch {
	t.Helper()
	require.NoError(t, p.err)
	require.True(t, c.take(t, p.batch))
	return p.batch
}

// answerOr503 takes an answer that may also be a 503: the registration
// was reading the history when Redis went away. The client asks again.
func (c *client) answerOr503(t *testing.T, p polled) {
	t.Helper()
	if _, unavailable := p.err.(errUnavailable); !unavailable {
		c.answer(t, p)
	}
}

// pollUntil polls until the client has a message at or beyond want, in
// want's epoch. It is for the goroutines of a test: it reports failures
// with assert and returns false.
func (c *client) pollUntil(t *testing.T, pick func(poll int) *node, want clientmgr.Cursor) bool {
	return c.pollWhile(t, pick, func() bool { return c.cursor.Epoch != want.Epoch || c.cursor.Seq < want.Seq })
}

// pollWhile polls the node pick chooses while more says so, riding out
// 503s while Redis is away.
func (c *client) pollWhile(t *testing.T, pick func(poll int) *node, more func() bool) bool {
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; more(); i++ {
		if !assert.True(t, time.Now().Before(deadline), "the client is still at %v", c.cursor) {
			return false
		}
		b, err := pick(i).poll(t.Context(), c.topic, c.cursor)
		if _, unavailable := err.(errUnavailable); unavailable {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if !assert.NoError(t, err) || !c.take(t, b) {
			return false
		}
	}
	return true
}

// seqs are the Seqs of msgs.
func seqs(msgs []clientmgr.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// span is Seqs from..to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// texts are msgs as "<cursor> <data>", to compare messages whatever the
// time zone of their Time.
func texts(msgs ...clientmgr.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Cursor().String() + " " + string(m.Data)
	}
	return out
}
