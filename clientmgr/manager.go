package clientmgr

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cometkit/cometkit/continuation"
)

// defaultShards spreads topics over locks so that Register and Broadcast
// on different topics rarely contend (BenchmarkParallelTopics compares it
// with one lock).
const defaultShards = 64

// A Manager holds suspended continuations by topic and fans messages out to
// them, keeping a bounded history per topic so that a client that
// registers with its last seen Seq never misses a message. Its methods are
// safe for concurrent use.
//
// A Manager owns one goroutine, which reclaims idle topics; Close stops it.
type Manager struct {
	cfg     config
	broker  Broker
	metrics *metrics
	seed    maphash.Seed
	shards  []shard
	topics  atomic.Int64
	closed  atomic.Bool
	quit    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

type shard struct {
	mu     sync.Mutex
	topics map[string]*topic
}

// New returns a Manager. It starts the goroutine that reclaims idle topics;
// call Close to stop it.
func New(opts ...Option) *Manager {
	cfg := newConfig(opts)
	m := &Manager{
		cfg:  cfg,
		seed: maphash.MakeSeed(),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	m.shards = make([]shard, cfg.shards)
	for i := range m.shards {
		m.shards[i].topics = make(map[string]*topic)
	}
	m.metrics = newMetrics(cfg.registerer)
	m.broker = cfg.broker
	if m.broker == nil {
		m.broker = NewInProcessBroker()
	}
	if err := m.broker.Attach(node{m}); err != nil {
		// New has no error result (the API contract); the broker's error
		// comes back from every Broadcast instead.
		m.broker = failedBroker{err}
	}
	go m.reclaimIdle()
	return m
}

func (m *Manager) shard(name string) *shard {
	return &m.shards[maphash.String(m.seed, name)%uint64(len(m.shards))]
}

// lookup returns the topic, creating it if create is set.
func (m *Manager) lookup(s *shard, name string, create bool, now time.Time) (*topic, error) {
	if t := s.topics[name]; t != nil || !create {
		return t, nil
	}
	if m.topics.Add(1) > int64(m.cfg.maxTopics) {
		m.topics.Add(-1)
		return nil, ErrTooManyTopics
	}
	t := newTopic(name, m.cfg.history, now)
	s.topics[name] = t
	m.metrics.topics.Inc()
	return t, nil
}

// Register registers c, which must be suspended, on topic. If the topic
// holds messages after Seq `after`, they are delivered to c at once and c is
// resumed with them (if `after` is larger than the topic's last Seq, a
// cursor from before a restart, the whole history is delivered); so a
// handler that suspends and registers with the client's last seen Seq never
// misses a message published in between. Then every Broadcast on topic
// joins c's batch until c's next dispatch starts or c finishes, when the
// registration ends by itself, on every topic c was registered on. Read the
// batch with Messages in that dispatch.
func (m *Manager) Register(topicName string, after uint64, c *continuation.Continuation) error {
	switch {
	case m.closed.Load():
		return ErrClosed
	case !validTopic(topicName):
		return fmt.Errorf("%w: %q", ErrInvalidTopic, topicName)
	case c == nil || !c.IsSuspended():
		return ErrNotSuspended
	}
	m.syncIfBehind(topicName, after)
	cl := m.clientFor(c)
	now := time.Now()
	s := m.shard(topicName)
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := m.lookup(s, topicName, true, now)
	if err != nil {
		return err
	}
	if !cl.register(t, c) {
		return ErrNotSuspended
	}
	if _, ok := t.subs[cl]; !ok {
		t.subs[cl] = struct{}{}
		m.metrics.registered.Inc()
	}
	t.activity = now
	if t.last != after {
		backlog, _ := t.since(after)
		for _, msg := range backlog {
			cl.deliver(msg)
		}
	}
	return nil
}

// register starts (or extends) the client's registration for c's current
// suspension; false if c is no longer suspended.
func (cl *client) register(t *topic, c *continuation.Continuation) bool {
	h := c.Handle()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.sealed || cl.handle != h {
		// A new suspension: a new batch.
		cl.handle, cl.batch, cl.sealed, cl.topics = h, nil, false, cl.topics[:0]
	}
	if !c.IsSuspended() {
		return false
	}
	if !slices.Contains(cl.topics, t) {
		cl.topics = append(cl.topics, t)
	}
	return true
}

// clientFor returns m's client for c, creating it (and listening to c) on
// first use.
func (m *Manager) clientFor(c *continuation.Continuation) *client {
	cls := attachedClients(c)
	cls.mu.Lock()
	defer cls.mu.Unlock()
	for _, cl := range cls.list {
		if cl.m == m {
			return cl
		}
	}
	cl := &client{m: m, sealed: true}
	cls.list = append(cls.list, cl)
	c.AddListener(cl)
	return cl
}

// attachMu serializes creating a continuation's client list, which lives
// in its attributes.
var attachMu sync.Mutex

func attachedClients(c *continuation.Continuation) *clientList {
	if cls, ok := c.Attribute(clientsAttr).(*clientList); ok {
		return cls
	}
	attachMu.Lock()
	defer attachMu.Unlock()
	cls, ok := c.Attribute(clientsAttr).(*clientList)
	if !ok {
		cls = &clientList{}
		c.SetAttribute(clientsAttr, cls)
	}
	return cls
}

func (m *Manager) unsubscribe(t *topic, cl *client) {
	s := m.shard(t.name)
	s.mu.Lock()
	if _, ok := t.subs[cl]; ok {
		delete(t.subs, cl)
		t.activity = time.Now()
		m.metrics.registered.Dec()
	}
	s.mu.Unlock()
}

// Broadcast publishes data on topic: the broker assigns its Seq, it joins
// the topic's history, and every continuation registered on the topic (on
// every node) gets it in its batch and is resumed. Broadcast never waits
// for a client; it returns the message as stored.
func (m *Manager) Broadcast(ctx context.Context, topicName string, data []byte) (Message, error) {
	switch {
	case m.closed.Load():
		return Message{}, ErrClosed
	case !validTopic(topicName):
		return Message{}, fmt.Errorf("%w: %q", ErrInvalidTopic, topicName)
	case len(data) > m.cfg.maxMessage:
		return Message{}, fmt.Errorf("%w: %d bytes, at most %d", ErrMessageTooLarge, len(data), m.cfg.maxMessage)
	}
	msg, err := m.broker.Publish(ctx, topicName, slices.Clone(data))
	if err != nil {
		return Message{}, err
	}
	m.metrics.messages.Inc()
	return msg, nil
}

// appendLocal assigns the next Seq of the topic and delivers the message:
// the in-process broker's whole Publish.
func (m *Manager) appendLocal(topicName string, data []byte, at time.Time) (Message, error) {
	s := m.shard(topicName)
	s.mu.Lock()
	t, err := m.lookup(s, topicName, true, at)
	if err != nil {
		s.mu.Unlock()
		return Message{}, err
	}
	msg := Message{Topic: topicName, Seq: t.last + 1, Data: data, Time: at}
	woken := m.deliverLocked(t, msg)
	s.mu.Unlock()
	resumeAll(woken)
	return msg, nil
}

// deliver takes a message published anywhere into the topic's history and
// to its local subscribers.
func (m *Manager) deliver(msg Message) {
	s := m.shard(msg.Topic)
	s.mu.Lock()
	t, err := m.lookup(s, msg.Topic, true, msg.Time)
	if err != nil || msg.Seq <= t.last {
		s.mu.Unlock()
		return // too many topics here, or a duplicate
	}
	woken := m.deliverLocked(t, msg)
	s.mu.Unlock()
	resumeAll(woken)
}

// deliverLocked appends msg to the topic's history and to the batch of
// every client registered on it, under the shard's lock, so that batches
// keep Seq order. It returns the suspensions to resume, which the caller
// resumes once it has released the lock: a resumed request's dispatch
// starts by ending its registrations under that lock, and would otherwise
// wait for the rest of the fan-out, tens of thousands of clients at once
// queueing on one mutex (BenchmarkBroadcast10k).
func (m *Manager) deliverLocked(t *topic, msg Message) []continuation.Handle {
	t.append(msg)
	var woken []continuation.Handle
	for cl := range t.subs {
		if h, wake, _ := cl.add(msg); wake {
			if woken == nil {
				woken = make([]continuation.Handle, 0, len(t.subs))
			}
			woken = append(woken, h)
		}
	}
	return woken
}

func resumeAll(hs []continuation.Handle) {
	for _, h := range hs {
		_ = h.Resume() // already resumed, expired or gone: the batch waits for its dispatch
	}
}

// Since returns the topic's history after Seq `after`, and whether it is
// complete: false when some of it already fell out of the history, and
// when `after` is larger than the topic's last Seq (a cursor from before a
// restart), in which case the whole history is returned.
func (m *Manager) Since(topicName string, after uint64) (msgs []Message, complete bool) {
	m.syncIfBehind(topicName, after)
	s := m.shard(topicName)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[topicName]
	if t == nil {
		return nil, after == 0
	}
	return t.since(after)
}

// LastSeq returns the topic's last Seq (0 if it has none), for subscribers
// that want only what comes next.
func (m *Manager) LastSeq(topicName string) uint64 {
	m.syncIfBehind(topicName, 0)
	return m.lastSeq(topicName)
}

func (m *Manager) lastSeq(topicName string) uint64 {
	s := m.shard(topicName)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.topics[topicName]; t != nil {
		return t.last
	}
	return 0
}

// resetTopic empties a topic's history; its subscribers stay registered
// and get what comes next.
func (m *Manager) resetTopic(topicName string) {
	s := m.shard(topicName)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.topics[topicName]; t != nil {
		clear(t.ring)
		t.last = 0
	}
}

// syncIfBehind asks a SyncBroker to bring the topic up to date when this
// node cannot answer a cursor from its own copy: it does not hold the
// topic, or the cursor is ahead of it. With any other broker the node's
// copy is the whole truth, and a cursor ahead of it is from before a
// restart.
func (m *Manager) syncIfBehind(topicName string, after uint64) {
	sb, ok := m.broker.(SyncBroker)
	if !ok || !validTopic(topicName) {
		return
	}
	s := m.shard(topicName)
	s.mu.Lock()
	t := s.topics[topicName]
	behind := t == nil || after > t.last
	s.mu.Unlock()
	if !behind {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := sb.Sync(ctx, topicName); err != nil {
		// Answer from what this node has; the broker counts and retries.
		m.metrics.syncFailed.Inc()
	}
}

// Count returns the number of continuations registered on topic now.
func (m *Manager) Count(topicName string) int {
	s := m.shard(topicName)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.topics[topicName]; t != nil {
		return len(t.subs)
	}
	return 0
}

// TopicInfo describes one topic, for presence and stats.
type TopicInfo struct {
	Name        string
	Subscribers int
	LastSeq     uint64
}

// Topics lists the topics whose name starts with prefix ("" for all),
// sorted by name. It holds one shard's lock at a time.
func (m *Manager) Topics(prefix string) []TopicInfo {
	var out []TopicInfo
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for name, t := range s.topics {
			if strings.HasPrefix(name, prefix) {
				out = append(out, TopicInfo{Name: name, Subscribers: len(t.subs), LastSeq: t.last})
			}
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b TopicInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// reclaimIdle is the Manager's goroutine: it drops topics that have had no
// subscriber and no message for the idle timeout.
func (m *Manager) reclaimIdle() {
	defer close(m.done)
	tick := time.NewTicker(m.cfg.idleTimeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-m.quit:
			return
		case now := <-tick.C:
			m.reclaim(now)
		}
	}
}

func (m *Manager) reclaim(now time.Time) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for name, t := range s.topics {
			if len(t.subs) == 0 && now.Sub(t.activity) >= m.cfg.idleTimeout {
				delete(s.topics, name)
				m.topics.Add(-1)
				m.metrics.topics.Dec()
			}
		}
		s.mu.Unlock()
	}
}

// Close stops the Manager: later calls return ErrClosed, every registered
// continuation is resumed (with what its batch holds, perhaps nothing) so
// that its handler can answer, the reclaiming goroutine stops, and the
// broker is closed.
func (m *Manager) Close() error {
	var err error
	m.closeMu.Do(func() {
		m.closed.Store(true)
		close(m.quit)
		<-m.done
		for i := range m.shards {
			s := &m.shards[i]
			s.mu.Lock()
			var subs []*client
			for _, t := range s.topics {
				for cl := range t.subs {
					subs = append(subs, cl)
				}
			}
			s.mu.Unlock()
			for _, cl := range subs {
				cl.mu.Lock()
				h := cl.handle
				cl.mu.Unlock()
				_ = h.Resume()
			}
		}
		err = m.broker.Close()
	})
	return err
}

// node is the Manager as its broker sees it.
type node struct{ m *Manager }

func (n node) Deliver(msg Message) { n.m.deliver(msg) }
func (n node) Append(topic string, data []byte, at time.Time) (Message, error) {
	return n.m.appendLocal(topic, data, at)
}
func (n node) LastSeq(topic string) uint64 { return n.m.lastSeq(topic) }
func (n node) Reset(topic string)          { n.m.resetTopic(topic) }
func (n node) Topics() []string {
	infos := n.m.Topics("")
	names := make([]string, len(infos))
	for i, t := range infos {
		names[i] = t.Name
	}
	return names
}

// failedBroker stands in for a broker that could not attach.
type failedBroker struct{ err error }

func (b failedBroker) Attach(Node) error { return b.err }
func (b failedBroker) Publish(context.Context, string, []byte) (Message, error) {
	return Message{}, b.err
}
func (b failedBroker) Close() error { return nil }
