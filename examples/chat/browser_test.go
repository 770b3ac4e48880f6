package main

// The chat as people use it: pages in headless Chromium (internal/
// testbrowser), each person in a browser context of their own (so with
// cookies, storage and a shared worker of their own), under the page's
// Content-Security-Policy. Screenshots are test artifacts: go test
// -artifacts ./examples/chat.

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/internal/testbrowser"
)

// A swappable serves through whichever chat server is current, so that a
// test can restart the chat under one address. It counts the page's
// requests for the member list, and the requests another site's page
// makes.
type swappable struct {
	t           *testing.T
	cur         atomic.Pointer[server]
	members     atomic.Int32
	crossOrigin atomic.Int32
}

func (h *swappable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/members") {
		h.members.Add(1)
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		h.crossOrigin.Add(1)
	}
	h.cur.Load().ServeHTTP(w, r)
}

// restart puts a new chat server (a new process, as far as clients can
// tell: new epochs, a new session key) in place of the current one, and
// shuts the old one down, whose clients come back to the new. The new
// server lives as long as the test that started the first.
func (h *swappable) restart(cfg config) {
	old := h.cur.Swap(startServer(h.t, cfg))
	require.NoError(h.t, old.hub.Shutdown(h.t.Context()))
}

// swappableChat serves a swappable chat server on loopback.
func swappableChat(t *testing.T, cfg config) (*swappable, *httptest.Server) {
	h := &swappable{t: t}
	ts := httptest.NewUnstartedServer(h)
	t.Cleanup(ts.Close) // after the chat servers' clean-up, which ends their clients' connections
	h.cur.Store(startServer(t, cfg))
	ts.Start()
	return h, ts
}

// A tab is one page of one person.
type tab struct{ *testbrowser.Tab }

// newTab opens a tab of person (a browser context) for the test t, closed
// at its end: a tab of its own has no room to come back to.
func newTab(t *testing.T, person *testbrowser.Tab) *tab {
	person.T = t
	return &tab{person.Another()}
}

// another opens another tab of the same person.
func (p *tab) another() *tab { return &tab{p.Another()} }

// join fills in the join form and waits until the page is connected.
func (p *tab) join(url, room, nick, transport string) {
	p.T.Helper()
	p.openJoin(url, room, nick, transport)
	p.waitJoined()
}

func (p *tab) waitJoined() {
	p.T.Helper()
	p.WaitFor(`!document.querySelector('#chat').hidden || document.querySelector('#join-error').textContent !== ''`)
	require.Empty(p.T, p.Text(`#join-error`))
	p.WaitFor(`document.querySelector('#state').dataset.state === 'connected'`)
}

// openJoin opens the chat with the transport forced ("" lets the page
// choose) and joins with the form.
func (p *tab) openJoin(url, room, nick, transport string) {
	p.T.Helper()
	if transport != "" {
		url += "/?transport=" + transport
	}
	p.Do(
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#join`)),
		chromedp.SetValue(chromedp.CSS(`#join input[name=room]`), room),
		chromedp.SetValue(chromedp.CSS(`#join input[name=nick]`), nick),
		chromedp.Click(chromedp.CSS(`#join button`)),
	)
}

func (p *tab) say(msg string) {
	p.T.Helper()
	p.Do(
		chromedp.SetValue(chromedp.CSS(`#send input[name=text]`), msg),
		chromedp.Click(chromedp.CSS(`#send button`)),
	)
}

// lineText is the text of a line of the messages, without its time.
const lineText = `((li) => [...li.childNodes].filter((n) => n.nodeName !== 'TIME').map((n) => n.textContent).join(''))`

// lines returns the page's lines of messages, without their times.
func (p *tab) lines() []string {
	p.T.Helper()
	return testbrowser.Run(p.Tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#messages li')].map(`+lineText+`)`))
}

// lastMessage waits until the last line of the page's messages holds
// want, and returns it, without its time.
func (p *tab) lastMessage(want string) string {
	p.T.Helper()
	p.WaitFor(`(() => { const li = document.querySelector('#messages li:last-child'); return !!li && li.textContent.includes(` + jsString(want) + `) })()`)
	lines := p.lines()
	return lines[len(lines)-1]
}

// shows waits until a line of the page's messages holds want.
func (p *tab) shows(want string) {
	p.T.Helper()
	p.WaitFor(`[...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes(` + jsString(want) + `))`)
}

func (p *tab) count(line string) int {
	n := 0
	for _, l := range p.lines() {
		if l == line {
			n++
		}
	}
	return n
}

func (p *tab) state() (state, transport string) {
	p.T.Helper()
	s := testbrowser.Run(p.Tab, chromedp.Evaluate[[]string](`[document.querySelector('#state').dataset.state, document.querySelector('#state').dataset.transport]`))
	return s[0], s[1]
}

// The chat on each transport, forced, and with the page's own choice: two
// people talk, markup stays text, who is online follows the events, lines
// carry their time, the send box keeps what is typed while a message is on
// its way, a reload keeps the nick without the room seeing it, and a
// restart of the server (new epochs, new session key) is told and gone
// through.
func TestBrowser(t *testing.T) {
	// A long-poll that waits a minute: the badge must say "connected"
	// long before a poll with nothing to say would answer.
	cfg := testConfig(pollTimeout(time.Minute))
	h, ts := swappableChat(t, cfg)
	b := testbrowser.Start(t)
	alicePerson, bobPerson := b.Person(), b.Person()

	for _, transport := range []string{"websocket", "sse", "longpoll", ""} {
		name := transport
		if name == "" {
			name = "chosen-by-the-page"
		}
		t.Run(name, func(t *testing.T) {
			alice, bob := newTab(t, alicePerson), newTab(t, bobPerson)
			room := "room-" + transport
			h.members.Store(0)
			alice.join(ts.URL, room, "alice", transport)
			bob.join(ts.URL, room, "bob", transport)
			for _, p := range []*tab{alice, bob} {
				state, used := p.state()
				assert.Equal(t, "connected", state)
				if transport == "" {
					assert.Equal(t, "websocket", used, "the best that works")
				} else {
					assert.Equal(t, transport, used)
				}
			}

			bob.say("hello alice")
			assert.Equal(t, "bobhello alice", alice.lastMessage("hello alice"))
			// Each line says when, in the page's time zone; the time element
			// holds the instant.
			at := testbrowser.Run(alice.Tab, chromedp.Evaluate[string](`document.querySelector('#messages li:last-child time').dateTime`))
			when, err := time.Parse(time.RFC3339Nano, at)
			require.NoError(t, err)
			assert.WithinDuration(t, time.Now(), when, time.Minute)

			// Markup shows as text and never runs.
			attack := `<script>window.pwned=1</script><img src=x onerror="window.pwned=1"><b>bold</b>`
			alice.say(attack)
			assert.Equal(t, "alice"+attack, bob.lastMessage("<b>bold</b>"))
			assert.Zero(t, bob.Eval(`window.pwned ? 1 : 0`), "the message ran as script")
			assert.Zero(t, bob.Eval(`document.querySelectorAll('#messages b, #messages img, #messages script').length`),
				"the message was parsed as HTML")

			// Who is online: bob's arrival reached alice's list as an event,
			// without a request for the member list.
			alice.WaitFor(`document.querySelector('#members').textContent.includes('bob')`)
			assert.Equal(t, "alicebob", alice.Text(`#members`))
			assert.Equal(t, "alicebob", bob.Text(`#members`))
			assert.Zero(t, h.members.Load(), "requests for the member list")

			// What bob types while his message is on its way stays in the box.
			bob.Eval(`(() => { const f = document.querySelector('#send'); f.elements.text.value = 'on its way'; f.requestSubmit(); f.elements.text.value = 'draft'; return 0 })()`)
			bob.lastMessage("on its way")
			assert.Equal(t, "draft", testbrowser.Run(bob.Tab, chromedp.Evaluate[string](`document.querySelector('#send input').value`)))

			// Bob reloads: his page joins again as bob by itself, with the
			// history, and the room sees neither a departure nor an arrival.
			bob.Do(chromedp.Reload())
			bob.waitJoined()
			history := strings.Join(bob.lines(), "\n")
			assert.Contains(t, history, "hello alice")
			assert.Contains(t, history, "<b>bold</b>")
			bob.say("reloaded")
			alice.shows("reloaded")
			assert.Equal(t, 1, alice.count("bob joined"))
			assert.Zero(t, alice.count("bob left"))
			bob.Screenshot("chat-" + name)

			// The server restarts (new epochs, a new session key) while both
			// pages hold cursors. Bob's next post joins him again by itself;
			// alice's page says she may have missed messages, and goes on
			// with everything posted after the restart.
			h.restart(cfg)
			bob.say("after the restart")
			bob.shows("after the restart")
			bob.say("and again")
			alice.shows("and again")
			assert.Equal(t, 1, alice.Eval(`document.querySelectorAll('#messages li.missed').length`))
			assert.Equal(t, "you may have missed messages", alice.Text(`#messages li.missed`))
			shown := strings.Join(alice.lines(), "\n")
			assert.Less(t, strings.Index(shown, "you may have missed messages"), strings.Index(shown, "after the restart"))
			assert.Contains(t, shown, "bobafter the restart")
			alice.WaitFor(`document.querySelector('#members').textContent === 'alicebob'`)
			alice.WaitFor(`document.querySelector('#state').dataset.state === 'connected'`)
			alice.Screenshot("chat-" + name + "-after-restart")
		})
	}

	// A page on another site, or on another port of this one, that alice
	// and bob visit while in the chat tries to post as alice and to make
	// bob leave: by fetch with their cookies, by a WebSocket, and by a
	// form. Every one of those requests reaches the chat and is refused.
	t.Run("cross-origin", func(t *testing.T) {
		alice, bob := newTab(t, alicePerson), newTab(t, bobPerson)
		room := "room-csrf"
		alice.join(ts.URL, room, "alice", "sse")
		bob.join(ts.URL, room, "bob", "longpoll")
		for _, host := range []string{"127.0.0.2", "127.0.0.1"} {
			evil := evilSite(t, host, ts.URL, room)
			before := h.crossOrigin.Load()
			for _, victim := range []*tab{alice, bob} {
				victim.another().Do(chromedp.Navigate(evil), chromedp.WaitVisible(chromedp.CSS(`#done`)))
			}
			require.Eventually(t, func() bool { return h.crossOrigin.Load()-before >= 6 }, 10*time.Second, 10*time.Millisecond,
				"the other site's requests reached the chat: %d", h.crossOrigin.Load()-before)
		}
		s := h.cur.Load()
		assert.Equal(t, []string{"alice", "bob"}, s.rooms.members(room))
		hist, err := s.mgr.History(t.Context(), topicOf(room), clientmgr.Cursor{})
		require.NoError(t, err)
		for _, ev := range chatEvents(hist.Messages) {
			assert.NotContains(t, string(ev.data), "forged")
			assert.NotEqual(t, "leave", ev.typ)
		}
		bob.say("still here")
		assert.Equal(t, "bobstill here", alice.lastMessage("still here"))
	})

	// One browser is one session, with one nick: joining with another nick
	// in a second tab ends the first tab's session, which says why; the
	// connection the tabs share carries the new nick's posts.
	t.Run("one nick per browser", func(t *testing.T) {
		first := newTab(t, alicePerson)
		first.join(ts.URL, "room-tabs", "alice", "")
		second := first.another()
		second.join(ts.URL, "room-tabs", "alicia", "")
		first.WaitFor(`document.querySelector('#join-error').textContent.includes('in this browser you are alicia now')`)
		second.say("from the second tab")
		assert.Equal(t, "aliciafrom the second tab", second.lastMessage("from the second tab"))
	})

	// A flood of joins and leaves outruns a room that keeps one event:
	// the page is told it may have missed some, and its member list is
	// right afterwards.
	t.Run("flood", func(t *testing.T) {
		alice := newTab(t, alicePerson)
		c := newChat(t, func(c *config) { c.history = 1 })
		alice.join(c.ts.URL, "flood", "alice", "longpoll")
		for i := 0; alice.Eval(`document.querySelectorAll('#messages li.missed').length`) == 0; i++ {
			require.Less(t, i, 100, "the page was never told")
			for j := range 100 {
				nick := fmt.Sprintf("u%d-%d", i, j)
				require.NoError(t, c.s.publish(t.Context(), "flood", event{Type: "join", Nick: nick}))
				require.NoError(t, c.s.publish(t.Context(), "flood", event{Type: "leave", Nick: nick}))
			}
			time.Sleep(100 * time.Millisecond) // for the page's next answers
		}
		alice.WaitFor(`document.querySelector('#members').textContent === 'alice'`)
	})

	// A server at its cap on rooms refuses a new one on join with a reason
	// the page shows.
	t.Run("room cap", func(t *testing.T) {
		alice := newTab(t, alicePerson)
		full := newChat(t, func(c *config) { c.maxRooms = 1 })
		full.person().join("only", "carol")
		alice.openJoin(full.ts.URL, "another", "alice", "")
		alice.WaitFor(`document.querySelector('#join-error').textContent.includes('as many rooms')`)
	})
}

// Eight tabs of one browser, over HTTP/1.1, where a browser opens six
// connections to a host at most: every tab loads and joins, and a message
// from the first reaches all eight, because the tabs share one connection
// to the hub (a shared worker holds it).
func TestBrowserTabs(t *testing.T) {
	b := testbrowser.Start(t)
	for _, transport := range []string{"sse", "longpoll", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			c := newChat(t, pollTimeout(time.Minute))
			tabs := []*tab{newTab(t, b.Person())}
			for len(tabs) < 8 {
				tabs = append(tabs, tabs[0].another())
			}
			for _, p := range tabs {
				p.join(c.ts.URL, "tabs", "ann", transport)
			}
			tabs[0].say("to every tab")
			for i, p := range tabs {
				assert.Equal(t, "annto every tab", p.lastMessage("to every tab"), "tab %d", i+1)
				assert.Equal(t, 1, p.count("annto every tab"), "tab %d: once", i+1)
			}
			if transport != "longpoll" { // whose polls come and go
				assert.Equal(t, 1.0, c.hubConnections(transport), "one connection for the eight tabs")
			}
		})
	}
}

// hubConnections reads the hub's gauge of connections on a transport.
func (c *chat) hubConnections(transport string) float64 {
	c.t.Helper()
	families, err := c.s.registry.Gather()
	require.NoError(c.t, err)
	for _, f := range families {
		if f.GetName() != "cometkit_hub_connections" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == transport {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// On a phone's screen (390 × 844), who is online, Leave and the send box
// are in view once joined; a rate limit's notice goes once the limit has
// passed; leaving is seen once, and the nick never comes back.
func TestBrowserPage(t *testing.T) {
	c := newChat(t, presence(200*time.Millisecond), func(c *config) { c.postRate = 1 })
	b := testbrowser.Start(t)
	ann, bea := newTab(t, b.Person()), newTab(t, b.Person())
	ann.Do(chromedp.EmulateViewport(390, 844))
	ann.join(c.ts.URL, "phone", "ann", "longpoll")
	bea.join(c.ts.URL, "phone", "bea", "longpoll")
	for _, sel := range []string{`aside h2`, `#leave`, `#members`, `#send input`, `#send button`} {
		assert.Equal(t, 1, ann.Eval(`(() => { const r = document.querySelector('`+sel+`').getBoundingClientRect(); return r.bottom <= innerHeight && r.right <= innerWidth && r.height > 0 ? 1 : 0 })()`),
			"%s in view", sel)
	}
	ann.WaitFor(`document.querySelector('#members').textContent === 'annbea'`)
	ann.Screenshot("chat-390px")

	// Past the rate (one a second, bursts of three): the notice says to
	// wait, and goes.
	ann.Eval(`(() => { const f = document.querySelector('#send'); for (let i = 0; i < 5; i++) { f.elements.text.value = 'quick ' + i; f.requestSubmit(); } return 0 })()`)
	ann.WaitFor(`document.querySelector('#send-error').textContent.includes('too fast')`)
	ann.WaitFor(`document.querySelector('#send-error').textContent === ''`)

	// Bea leaves on the long-poll transport, her poll waiting: the room
	// sees it once, over several presence timeouts, and her nick stays
	// gone.
	bea.Do(chromedp.Click(chromedp.CSS(`#leave`)))
	ann.shows("bea left")
	time.Sleep(4 * 3 * 200 * time.Millisecond) // four times as long as a nick takes to time out
	ann.say("still alone")
	ann.lastMessage("still alone")
	assert.Equal(t, 1, ann.count("bea left"))
	assert.Equal(t, 1, ann.count("bea joined"))
	assert.Equal(t, "ann", ann.Text(`#members`))
	assert.Equal(t, []string{"ann"}, c.s.rooms.members("phone"))
}

// evilSite serves, on host, a page that posts as whoever visits it in the
// chat room at base, and makes them leave it: with fetch (credentials
// included), a WebSocket to the hub, and a form. Its inline script runs:
// it is not the chat's page, and has no policy.
func evilSite(t *testing.T, host, base, room string) string {
	publish := fmt.Sprintf(`{"op":"publish","topic":"room:%s","data":"forged by %%s","id":1}`, room)
	page := fmt.Sprintf(`<!doctype html>
<form id="f" method="POST" action="%[1]s/rooms/%[2]s/leave" target="sink"><input name="nick" value="bob"></form>
<iframe name="sink"></iframe>
<script>
const opts = (body) => ({ method: "POST", mode: "no-cors", credentials: "include", body });
const socket = new Promise((done) => {
  const ws = new WebSocket(%[3]q, ["cometkit-hub.v1"]);
  ws.onopen = () => ws.send(%[4]q);
  ws.onclose = done;
});
Promise.allSettled([
  fetch(%[5]q, opts(%[6]q)),
  fetch(%[7]q, opts(new URLSearchParams({ nick: "bob" }))),
  socket,
]).then(() => {
  document.getElementById("f").submit();
  document.body.append(Object.assign(document.createElement("p"), { id: "done" }));
});
</script>`, base, room, "ws"+strings.TrimPrefix(base, "http")+"/hub/", fmt.Sprintf(publish, "a WebSocket"),
		base+"/hub/", fmt.Sprintf(publish, "fetch"), base+"/rooms/"+room+"/leave")
	l, err := net.Listen("tcp", host+":0")
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b := []byte{'"'}
	for _, r := range s {
		switch r {
		case '"', '\\':
			b = append(b, '\\', byte(r))
		default:
			b = append(b, string(r)...)
		}
	}
	return string(append(b, '"'))
}
