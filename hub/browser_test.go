package hub_test

// The hub's client in Chromium (internal/testbrowser): a test page
// (testdata/browser) that follows one topic, served under a Content
// Security Policy as strict as the chat's, each page in a browser context
// of its own, so with a shared worker and a connection of its own.

import (
	"context"

	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/hub"
	"github.com/cometkit/cometkit/internal/testbrowser"
	"github.com/cometkit/cometkit/internal/testredis"
)

// A pageServer serves the test page and a hub on a listener of its own,
// behind a frontDoor, and can restart on the same address, as a process
// does: its Manager is made again by newMgr, which may keep the topics in
// Redis.
type pageServer struct {
	t      *testing.T
	newMgr func() *clientmgr.Manager

	mu     sync.Mutex // held over a publish, a cut and a restart
	addr   string
	mgr    *clientmgr.Manager
	hub    *hub.Hub
	srv    *http.Server
	door   *frontDoor
	served chan error
}

func startPageServer(t *testing.T, newMgr func() *clientmgr.Manager) *pageServer {
	s := &pageServer{t: t, newMgr: newMgr}
	s.start("127.0.0.1:0")
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stop()
	})
	return s
}

// The policy of the chat's page: scripts (and so workers) and connections
// of the page's own origin only.
const testPolicy = "default-src 'none'; script-src 'self'; connect-src 'self'; base-uri 'none'"

func (s *pageServer) start(addr string) {
	l, err := net.Listen("tcp", addr)
	require.NoError(s.t, err)
	s.addr = l.Addr().String()
	s.mgr = s.newMgr()
	s.hub = hub.New(s.mgr)
	mux := http.NewServeMux()
	mux.Handle("/hub/", s.hub)
	mux.Handle("/", http.FileServer(http.Dir("testdata/browser")))
	s.door = newFrontDoor(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", testPolicy)
		mux.ServeHTTP(w, r)
	}))
	s.srv = &http.Server{Handler: s.door, ConnState: s.door.track, ConnContext: s.door.connContext, ReadHeaderTimeout: 10 * time.Second}
	s.srv.RegisterOnShutdown(s.hub.Drain)
	s.served = make(chan error, 1)
	go func() { s.served <- s.srv.Serve(l) }()
}

// stop shuts the server down as a process on SIGTERM does: the hub drains
// (WebSockets closed with 1001, streams ended, polls answered), then the
// Manager closes.
func (s *pageServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(s.t, s.srv.Shutdown(ctx))
	require.NoError(s.t, s.hub.Shutdown(ctx))
	require.ErrorIs(s.t, <-s.served, http.ErrServerClosed)
	require.NoError(s.t, s.mgr.Close())
}

func (s *pageServer) restart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
	s.start(s.addr)
}

func (s *pageServer) publish(topic, data string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.mgr.Broadcast(context.Background(), topic, []byte(data))
	require.NoError(s.t, err)
}

func (s *pageServer) cutOne(r *rand.Rand) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.door.cutOne(r)
}

// open shows the test page following topic over transport, with more of
// the page's parameters, if any.
func (s *pageServer) open(p *testbrowser.Tab, transport, topic string, more ...string) {
	p.Do(chromedp.Navigate(fmt.Sprintf("http://%s/?transport=%s&topic=%s", s.addr, transport, topic) + strings.Join(more, "")))
	p.WaitFor(`document.body.dataset.subscribed === 'yes' && document.querySelector('#state').dataset.state === 'connected'`)
	assert.Equal(p.T, transport, testbrowser.Run(p, chromedp.Evaluate[string](`document.querySelector('#state').dataset.transport`)))
}

// shared reports whether the page's connection is the one its browser's
// tabs share, which a shared worker holds.
func shared(p *testbrowser.Tab) bool {
	return testbrowser.Run(p, chromedp.Evaluate[string](`document.querySelector('#state').dataset.shared`)) == "true"
}

// shown is what a page lists: each message's data, and "missed".
func shown(p *testbrowser.Tab) []string {
	p.T.Helper()
	return testbrowser.Run(p, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#messages li')].map((li) => li.className === 'missed' ? 'missed' : li.textContent)`))
}

// The loss test, over each transport: two pages follow one topic while
// 1,000 messages are published, their connections are broken 100 times at
// random (closed under the server, as a network failure would), and the
// server restarts once, on a Manager that keeps the topic in Redis. Each
// page shows every message once, in order. Then, on a server that keeps
// five messages, a page away while twenty are published shows "missed",
// then the last five.
func TestBrowserLoss(t *testing.T) {
	redis := testredis.Start(t, "--appendfsync", "no")
	b := testbrowser.Start(t)
	pages := []*testbrowser.Tab{b.Person(), b.Person()}
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			for _, p := range pages {
				p.T = t
			}
			s := startPageServer(t, func() *clientmgr.Manager {
				broker, err := redisbroker.Open("redis://" + redis.Addr + "/0")
				require.NoError(t, err)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				mgr, err := clientmgr.Open(ctx, clientmgr.WithBroker(broker), clientmgr.WithHistory(2000))
				require.NoError(t, err)
				return mgr
			})
			topic := "loss-" + transport
			for _, p := range pages {
				s.open(p, transport, topic)
				assert.True(t, shared(p), "a shared worker holds the connection")
			}

			const messages, cuts = 1000, 100
			r := rand.New(rand.NewPCG(1, uint64(len(transport))))
			var cutsMade atomic.Int32
			cutting, stop := make(chan struct{}), make(chan struct{})
			t.Cleanup(func() {
				close(stop)
				<-cutting
			})
			go func() {
				defer close(cutting)
				for cutsMade.Load() < cuts {
					select {
					case <-stop:
						return
					default:
					}
					time.Sleep(time.Duration(r.IntN(100)) * time.Millisecond)
					if s.cutOne(r) {
						cutsMade.Add(1)
					}
				}
			}()
			want := make([]string, messages)
			for i := range messages {
				if i == messages/2 {
					s.restart()
				}
				// The cuts keep pace with the messages: one every ten.
				for deadline := time.Now().Add(time.Minute); int(cutsMade.Load()) < i*cuts/messages; time.Sleep(time.Millisecond) {
					require.True(t, time.Now().Before(deadline), "no connection to the hub to break")
				}
				want[i] = strconv.Itoa(i + 1)
				s.publish(topic, want[i])
				time.Sleep(5 * time.Millisecond)
			}
			<-cutting
			t.Logf("%d connections broken, and one restart, while %d messages were published", cutsMade.Load(), messages)
			for _, p := range pages {
				p.WaitFor(fmt.Sprintf(`document.querySelectorAll('#messages li').length >= %d`, messages))
				assert.Equal(t, want, shown(p), "every message once, in order, and nothing missed")
			}

			// A short history, and a page away for longer than it reaches.
			short := startPageServer(t, func() *clientmgr.Manager { return clientmgr.New(clientmgr.WithHistory(5)) })
			p := pages[0]
			short.open(p, transport, "gap")
			short.publish("gap", "before")
			p.WaitFor(`document.querySelectorAll('#messages li').length === 1`)
			short.door.shut.Store(true)
			short.mu.Lock()
			short.door.cut()
			short.mu.Unlock()
			for i := range 20 {
				short.publish("gap", strconv.Itoa(i+1))
			}
			short.door.shut.Store(false)
			p.WaitFor(`document.querySelectorAll('#messages li').length === 7`)
			assert.Equal(t, []string{"before", "missed", "16", "17", "18", "19", "20"}, shown(p))
		})
	}
}

// A browser without SharedWorker (or where it cannot start): the page
// keeps a connection of its own, and misses nothing either.
func TestBrowserWithoutSharedWorker(t *testing.T) {
	s := startPageServer(t, func() *clientmgr.Manager { return clientmgr.New() })
	p := testbrowser.Start(t).Person()
	s.open(p, "sse", "solo", "&noworker")
	assert.False(t, shared(p))
	s.publish("solo", "one")
	s.mu.Lock()
	s.door.cut()
	s.mu.Unlock()
	s.publish("solo", "two")
	p.WaitFor(`document.querySelectorAll('#messages li').length === 2`)
	assert.Equal(t, []string{"one", "two"}, shown(p))
}
