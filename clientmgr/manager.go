package clientmgr

import (
	"context"
	"errors"
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

// A Manager holds the continuations waiting on topics on this node and
// hands them what its Broker publishes. Its methods are safe for
// concurrent use.
//
// A Manager owns one goroutine, which reclaims idle topics, and its
// broker; Close stops both.
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
	once    sync.Once
	err     error // Close's result
}

type shard struct {
	mu     sync.Mutex
	topics map[string]*topic
}

// topic is what this node knows of a topic: the clients registered on it,
// and the position of the last message delivered here. Guarded by its
// shard's lock.
type topic struct {
	name string
	subs map[*client]*part
	// pos is the last message delivered here; while fresh, a client whose
	// cursor is pos registers without reading the history.
	pos      Cursor
	fresh    bool
	activity time.Time // last message, registration or unregistration
}

// Open returns a Manager whose broker has started within ctx, or the
// broker's error. It starts the goroutine that reclaims idle topics; call
// Close to stop it and the broker.
func Open(ctx context.Context, opts ...Option) (*Manager, error) {
	cfg := newConfig(opts)
	m := &Manager{
		cfg:    cfg,
		broker: cfg.broker,
		seed:   maphash.MakeSeed(),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if m.broker == nil {
		m.broker = NewInProcessBroker()
	}
	m.shards = make([]shard, cfg.shards)
	for i := range m.shards {
		m.shards[i].topics = make(map[string]*topic)
	}
	m.metrics = newMetrics(cfg.registerer)
	if err := m.broker.Start(ctx, node{m}, BrokerConfig{History: cfg.history, HistoryBytes: cfg.historyBytes}); err != nil {
		return nil, errors.Join(fmt.Errorf("clientmgr: starting the broker: %w", err), m.broker.Close())
	}
	go m.reclaimIdle()
	return m, nil
}

// New is Open for a broker that cannot fail to start, such as the default
// in-process one: it panics if the broker's Start returns an error. Use
// Open with a broker that does I/O (package redisbroker).
func New(opts ...Option) *Manager {
	m, err := Open(context.Background(), opts...)
	if err != nil {
		panic(err.Error() + " (use clientmgr.Open to handle a broker's error)")
	}
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
	t := &topic{name: name, subs: make(map[*client]*part), activity: now}
	s.topics[name] = t
	m.metrics.topics.Inc()
	return t, nil
}

// Register registers c, which must be suspended, on topic, with a plain
// Seq cursor taken at face value: RegisterCursor with Cursor{Seq: after},
// within c's request context. Prefer RegisterCursor with the cursor of
// the last message the client saw: a plain Seq cannot tell a sequence that
// started again (a restart) from the one the client saw.
func (m *Manager) Register(topicName string, after uint64, c *continuation.Continuation) error {
	ctx := context.Background()
	if c != nil {
		ctx = c.Request().Context()
	}
	return m.RegisterCursor(ctx, topicName, Cursor{Seq: after}, c)
}

// RegisterCursor registers c, which must be suspended, on topic, for the
// messages after the client's cursor. What the history holds after it is
// delivered at once (c is resumed with it); a cursor that cannot be
// honoured (from another epoch, older than the history, ahead of the
// topic) resumes c at once with what there is, its Batch marked
// incomplete. Then every message published on the topic joins c's batch
// until c's next dispatch starts or c finishes, when the registration
// ends by itself, on every topic c was registered on. Read the batches in
// that dispatch with Batches (or Messages).
//
// Register is atomic with Broadcast: a message is in the history the
// registration reads or delivered to it, never neither, so a handler that
// suspends and registers with the client's cursor never misses a message.
// When the cursor is where this node's copy of the topic stands, nothing
// is read; otherwise the broker's History is, within ctx.
//
// It returns ErrNotSuspended if c is not suspended, ErrAlreadyRegistered
// for a second registration on topic in one suspension, ErrInvalidTopic,
// ErrTooManyTopics, ErrClosed, or the broker's error reading the history.
// On an error c stays suspended and is not registered on topic (it may be
// on others): the handler should end the suspension itself, for instance
// with c.Resume() to answer at once.
func (m *Manager) RegisterCursor(ctx context.Context, topicName string, after Cursor, c *continuation.Continuation) error {
	switch {
	case m.closed.Load():
		return ErrClosed
	case !validTopic(topicName):
		return fmt.Errorf("%w: %q", ErrInvalidTopic, topicName)
	case c == nil || !c.IsSuspended():
		return ErrNotSuspended
	}
	cl := m.clientFor(c)
	return m.register(ctx, topicName, after, cl, func(t *topic) (*part, error) { return cl.begin(t, c, after) })
}

// register adds a part, made by begin, for cl on the topic, and fills it
// from after: at once when after is where this node stands, else from the
// broker's history, within ctx.
func (m *Manager) register(ctx context.Context, topicName string, after Cursor, cl *client, begin func(*topic) (*part, error)) error {
	s := m.shard(topicName)
	s.mu.Lock()
	if m.closed.Load() { // under the lock: Close wakes what it finds under it
		s.mu.Unlock()
		return ErrClosed
	}
	t, err := m.lookup(s, topicName, true, time.Now())
	if err != nil {
		s.mu.Unlock()
		return err
	}
	p, err := begin(t)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	t.subs[cl] = p
	t.activity = time.Now()
	m.metrics.registered.Inc()
	if t.fresh && (after == t.pos || (after.Epoch == 0 && after.Seq == t.pos.Seq)) {
		p.state = live // up to date: nothing to read
		s.mu.Unlock()
		return nil
	}
	seen := t.pos
	s.mu.Unlock()

	m.metrics.historyReads.Inc()
	msgs, head, err := m.broker.History(ctx, topicName, after, seen)
	if err != nil {
		m.unsubscribe(t, cl)
		cl.abandon(p)
		return fmt.Errorf("clientmgr: reading the history of %q: %w", topicName, err)
	}
	b := window(topicName, after, msgs, head)
	if !b.Complete {
		m.metrics.incomplete.Inc()
	}
	if w, wake := cl.settle(p, b); wake {
		w.fire()
	}
	return nil
}

// clientFor returns m's client for c, creating it (and listening to c) on
// first use.
func (m *Manager) clientFor(c *continuation.Continuation) *client {
	v, _ := c.LoadOrStoreValue(clientsKey{}, &clientList{})
	cls := v.(*clientList)
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

// Broadcast publishes data on topic through the broker, which gives it its
// Epoch and Seq and keeps it in the topic's history; every continuation
// registered on the topic, on every node, gets it in its batch and is
// resumed. Broadcast never waits for a client; it returns the message as
// stored.
func (m *Manager) Broadcast(ctx context.Context, topicName string, data []byte) (Message, error) {
	switch {
	case m.closed.Load():
		return Message{}, ErrClosed
	case !validTopic(topicName):
		return Message{}, fmt.Errorf("%w: %q", ErrInvalidTopic, topicName)
	case len(data) > m.cfg.maxMessage:
		return Message{}, fmt.Errorf("%w: %d bytes, at most %d", ErrMessageTooLarge, len(data), m.cfg.maxMessage)
	}
	// The topic is made here first, so that the broker keeps nothing for a
	// topic beyond WithMaxTopics.
	now := time.Now()
	s := m.shard(topicName)
	s.mu.Lock()
	t, err := m.lookup(s, topicName, true, now)
	var seen Cursor
	if err == nil {
		seen = t.pos
		t.activity = now
	}
	s.mu.Unlock()
	if err != nil {
		return Message{}, err
	}
	msg, err := m.broker.Publish(ctx, topicName, slices.Clone(data), seen)
	if err != nil {
		return Message{}, err
	}
	m.metrics.messages.Inc()
	return msg, nil
}

// deliver hands a message published anywhere to the clients registered on
// its topic here.
func (m *Manager) deliver(msg Message) error {
	s := m.shard(msg.Topic)
	s.mu.Lock()
	t := s.topics[msg.Topic]
	if t == nil {
		s.mu.Unlock()
		return nil // nobody here asked for it; History has it
	}
	if msg.Epoch == t.pos.Epoch && msg.Seq <= t.pos.Seq {
		if msg.Seq == t.pos.Seq {
			s.mu.Unlock()
			return nil // delivered twice: nothing new
		}
		// The engine's sequence went back: every cursor past msg in this
		// epoch names a message the engine no longer has. The clients are
		// told, and the broker starts a new epoch.
		had := t.pos
		t.pos, t.fresh = msg.Cursor(), false
		m.metrics.rewound.Inc()
		woken := m.breakOffLocked(t, false)
		s.mu.Unlock()
		wakeAll(woken)
		return fmt.Errorf("%w: %q at Seq %d after %d", ErrSequenceRewound, msg.Topic, msg.Seq, had.Seq)
	}
	t.pos, t.fresh = msg.Cursor(), true
	t.activity = msg.Time
	woken := m.offerLocked(t, msg)
	s.mu.Unlock()
	// Resumed after the lock is released: a resumed request's dispatch
	// starts by ending its registrations under that lock, and would
	// otherwise wait for the rest of the fan-out, tens of thousands of
	// clients at once queueing on one mutex (BenchmarkBroadcast10k).
	wakeAll(woken)
	return nil
}

// epochStarted moves this node's copy of the topic to a new epoch that has
// no message yet. The start is offered to the clients registered on the
// topic as a message with Seq 0, which no batch takes: it ends the batches
// of the old epoch (their clients ask again and are told), and it is
// skipped by a registration whose history read already saw the new epoch.
func (m *Manager) epochStarted(topicName string, epoch uint64) {
	s := m.shard(topicName)
	s.mu.Lock()
	t := s.topics[topicName]
	if t == nil || t.pos.Epoch == epoch {
		s.mu.Unlock()
		return // nobody here, or the node has seen the epoch already
	}
	t.pos, t.fresh = Cursor{Epoch: epoch}, true
	woken := m.offerLocked(t, Message{Topic: topicName, Epoch: epoch})
	s.mu.Unlock()
	wakeAll(woken)
}

// offerLocked offers msg to every client registered on t and returns the
// suspensions to resume.
func (m *Manager) offerLocked(t *topic, msg Message) []wakeup {
	var woken []wakeup
	for cl, p := range t.subs {
		if w, wake := cl.offer(p, msg); wake {
			if woken == nil {
				woken = make([]wakeup, 0, len(t.subs))
			}
			woken = append(woken, w)
		}
	}
	return woken
}

// breakOffLocked finishes the batches of every client registered on t
// (complete or not) and returns the suspensions to resume.
func (m *Manager) breakOffLocked(t *topic, complete bool) []wakeup {
	var woken []wakeup
	for cl, p := range t.subs {
		if w, wake := cl.breakOff(p, complete); wake {
			woken = append(woken, w)
		}
	}
	return woken
}

// wakeEveryone finishes the batch of every registered client, complete,
// and resumes it, one shard at a time. No topic's position is taken as
// current afterwards: the broker was interrupted, and messages may have
// been published that never reached this node, so each client asks again
// from its cursor and reads the history; or the Manager is closing, and no
// one asks again.
func (m *Manager) wakeEveryone() {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		var woken []wakeup
		for _, t := range s.topics {
			t.fresh = false
			woken = append(woken, m.breakOffLocked(t, true)...)
		}
		s.mu.Unlock()
		wakeAll(woken)
	}
}

// History returns the topic's messages after the cursor, as a Batch that
// says whether the cursor was honoured and where to ask from next. It
// reads the broker's history within ctx.
func (m *Manager) History(ctx context.Context, topicName string, after Cursor) (Batch, error) {
	if !validTopic(topicName) {
		return Batch{}, fmt.Errorf("%w: %q", ErrInvalidTopic, topicName)
	}
	msgs, head, err := m.broker.History(ctx, topicName, after, m.position(topicName))
	if err != nil {
		return Batch{}, fmt.Errorf("clientmgr: reading the history of %q: %w", topicName, err)
	}
	return window(topicName, after, msgs, head), nil
}

// position is where this node's copy of the topic stands (the zero Cursor
// if it holds none).
func (m *Manager) position(topicName string) Cursor {
	s := m.shard(topicName)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.topics[topicName]; t != nil {
		return t.pos
	}
	return Cursor{}
}

// Since returns the topic's history after Seq `after`, and whether it is
// complete: false when some of it already fell out of the history, and
// when `after` is larger than the topic's last Seq (a cursor from before a
// restart), in which case the whole history is returned. It reads the
// broker's history within DefaultReadTimeout and answers (nil, false) if
// that fails; use History for a cursor with an epoch, a context and the
// error.
func (m *Manager) Since(topicName string, after uint64) (msgs []Message, complete bool) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultReadTimeout)
	defer cancel()
	b, err := m.History(ctx, topicName, Cursor{Seq: after})
	if err != nil {
		return nil, false
	}
	return b.Messages, b.Complete
}

// Head returns where the topic stands: the position of its newest message
// (the zero Cursor for a topic with no messages). A client that wants only
// what comes next registers with it.
func (m *Manager) Head(ctx context.Context, topicName string) (Cursor, error) {
	if !validTopic(topicName) {
		return Cursor{}, fmt.Errorf("%w: %q", ErrInvalidTopic, topicName)
	}
	head, err := m.broker.Head(ctx, topicName)
	if err != nil {
		return Cursor{}, fmt.Errorf("clientmgr: reading the head of %q: %w", topicName, err)
	}
	return head, nil
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

// TopicInfo describes one topic on this node, for presence and stats.
type TopicInfo struct {
	Name        string
	Subscribers int
	Last        Cursor // the last message delivered on this node
}

// Topics lists the topics this node holds whose name starts with prefix
// ("" for all), sorted by name. It holds one shard's lock at a time.
func (m *Manager) Topics(prefix string) []TopicInfo {
	var out []TopicInfo
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for name, t := range s.topics {
			if strings.HasPrefix(name, prefix) {
				out = append(out, TopicInfo{Name: name, Subscribers: len(t.subs), Last: t.pos})
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
	tick := time.NewTicker(max(m.cfg.idleTimeout/4, time.Millisecond))
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
	forgetter, _ := m.broker.(Forgetter)
	for i := range m.shards {
		s := &m.shards[i]
		var gone []string
		s.mu.Lock()
		for name, t := range s.topics {
			if len(t.subs) == 0 && now.Sub(t.activity) >= m.cfg.idleTimeout {
				delete(s.topics, name)
				gone = append(gone, name)
			}
		}
		s.mu.Unlock()
		m.topics.Add(-int64(len(gone)))
		m.metrics.topics.Sub(float64(len(gone)))
		if forgetter != nil {
			for _, name := range gone {
				forgetter.Forget(name)
			}
		}
	}
}

// Close stops the Manager: later calls return ErrClosed, every registered
// continuation is resumed (with what its batch holds, perhaps nothing) so
// that its handler can answer, the reclaiming goroutine stops, and the
// broker is closed; Close returns the broker's error. Calling it again
// returns the same.
func (m *Manager) Close() error {
	m.once.Do(func() {
		m.closed.Store(true)
		close(m.quit)
		<-m.done
		m.wakeEveryone()
		m.err = m.broker.Close()
	})
	return m.err
}

// node is the Manager as its broker sees it.
type node struct{ m *Manager }

func (n node) Deliver(msg Message) error { return n.m.deliver(msg) }
func (n node) Interrupted()              { n.m.wakeEveryone() }
func (n node) EpochStarted(topic string, epoch uint64) {
	n.m.epochStarted(topic, epoch)
}
