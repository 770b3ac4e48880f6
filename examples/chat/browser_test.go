package main

// The chat as people use it: pages in headless Chromium (Debian's package;
// ./test installs it), each person in a browser context of their own (so
// with cookies of their own), under the page's Content-Security-Policy.
// Screenshots are test artifacts: go test -artifacts ./examples/chat.

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
// drains the old one, whose waiting clients come back to the new. The new
// server lives as long as the test that started the first.
func (h *swappable) restart(cfg config) {
	old := h.cur.Swap(startServer(h.t, cfg))
	require.NoError(h.t, old.mw.Shutdown(h.t.Context()))
}

// A tab is one page of one person.
type tab struct{ *testbrowser.Tab }

func visitor(b *testbrowser.Browser) *tab { return &tab{b.Person()} }

func (p *tab) another() *tab { return &tab{p.Another()} }

// join fills in the join form and waits until the page is connected.
func (p *tab) join(url, room, nick, transport string) {
	p.T.Helper()
	p.openJoin(url, room, nick, transport)
	p.WaitFor(`!document.querySelector('#chat').hidden || document.querySelector('#join-error').textContent !== ''`)
	require.Empty(p.T, p.Text(`#join-error`), "joining %s as %s", room, nick)
	p.WaitFor(`document.querySelector('#state').dataset.state === 'connected'`)
}

func (p *tab) openJoin(url, room, nick, transport string) {
	p.T.Helper()
	p.Do(
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#join`)),
		chromedp.SetValue(chromedp.CSS(`#join input[name=room]`), room),
		chromedp.SetValue(chromedp.CSS(`#join input[name=nick]`), nick),
		chromedp.SetValue(chromedp.CSS(`#join select[name=transport]`), transport),
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

// lastMessage waits until the last line of the page's messages holds
// want, and returns it.
func (p *tab) lastMessage(want string) string {
	p.T.Helper()
	p.WaitFor(`(() => { const li = document.querySelector('#messages li:last-child'); return !!li && li.textContent.includes(` + jsString(want) + `) })()`)
	return p.Text(`#messages li:last-child`)
}

// shows waits until a line of the page's messages holds want.
func (p *tab) shows(want string) {
	p.T.Helper()
	p.WaitFor(`[...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes(` + jsString(want) + `))`)
}

func TestBrowser(t *testing.T) {
	cfg := testConfig(pollTimeout(2 * time.Second))
	h := &swappable{t: t}
	ts := httptest.NewUnstartedServer(h)
	t.Cleanup(ts.Close) // after the chat servers' clean-up, which ends their waiting clients
	h.cur.Store(startServer(t, cfg))
	ts.Start()
	b := testbrowser.Start(t)
	alice, bob := visitor(b), visitor(b)

	for _, transport := range []string{"longpoll", "sse"} {
		t.Run(transport, func(t *testing.T) {
			alice.T, bob.T = t, t
			room := "room-" + transport
			h.members.Store(0)
			alice.join(ts.URL, room, "alice", transport)
			bob.join(ts.URL, room, "bob", transport)

			bob.say("hello alice")
			assert.Equal(t, "bobhello alice", alice.lastMessage("hello alice"))

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

			// Bob reloads: after joining again he sees the history.
			bob.join(ts.URL, room, "bob", transport)
			history := bob.Text(`#messages`)
			assert.Contains(t, history, "hello alice")
			assert.Contains(t, history, "<b>bold</b>")
			bob.Screenshot("chat-" + transport)

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
			shown := alice.Text(`#messages`)
			assert.Less(t, strings.Index(shown, "you may have missed messages"), strings.Index(shown, "after the restart"))
			assert.Contains(t, shown, "bobafter the restart")
			alice.WaitFor(`document.querySelector('#members').textContent === 'alicebob'`)
			alice.Screenshot("chat-" + transport + "-after-restart")
		})
	}

	// A page on another site, or on another port of this one, that alice
	// and bob visit while in the chat tries to post as alice and to make
	// bob leave: by fetch with their cookies, and by a form. Every one of
	// those requests reaches the chat and is refused.
	t.Run("cross-origin", func(t *testing.T) {
		alice.T, bob.T = t, t
		room := "room-csrf"
		alice.join(ts.URL, room, "alice", "sse")
		bob.join(ts.URL, room, "bob", "longpoll")
		for _, host := range []string{"127.0.0.2", "127.0.0.1"} {
			evil := evilSite(t, host, ts.URL+"/rooms/"+room)
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
	// in a second tab ends the first tab's session, which says why.
	t.Run("one nick per browser", func(t *testing.T) {
		alice.T = t
		alice.join(ts.URL, "room-tabs", "alice", "longpoll")
		second := alice.another()
		second.join(ts.URL, "room-tabs", "alicia", "sse")
		alice.WaitFor(`document.querySelector('#join-error').textContent.includes('in this browser you are alicia now')`)
		second.say("from the second tab")
		assert.Equal(t, "aliciafrom the second tab", second.lastMessage("from the second tab"))
	})

	// A flood of joins and leaves outruns a room that keeps one event:
	// the page is told it may have missed some, and its member list is
	// right afterwards.
	t.Run("flood", func(t *testing.T) {
		alice.T = t
		c := newChat(t, pollTimeout(2*time.Second), func(c *config) { c.history = 1 })
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
		alice.T = t
		full := newChat(t, func(c *config) { c.maxRooms = 1 })
		full.person().join("only", "carol")
		alice.openJoin(full.ts.URL, "another", "alice", "longpoll")
		alice.WaitFor(`document.querySelector('#join-error').textContent.includes('as many rooms')`)
	})
}

// evilSite serves, on host, a page that posts as whoever visits it to the
// chat room at roomURL and makes them leave it: with fetch (credentials
// included) and with a form. Its inline script runs: it is not the chat's
// page, and has no policy.
func evilSite(t *testing.T, host, roomURL string) string {
	page := fmt.Sprintf(`<!doctype html>
<form id="f" method="POST" action="%[1]s/messages" target="sink"><input name="text" value="forged by a form"><input name="nick" value="alice"></form>
<iframe name="sink"></iframe>
<script>
const opts = (body) => ({ method: "POST", mode: "no-cors", credentials: "include", body: new URLSearchParams(body) });
Promise.allSettled([
  fetch(%[2]q, opts({ text: "forged by fetch", nick: "alice" })),
  fetch(%[3]q, opts({ nick: "bob" })),
]).then(() => {
  document.getElementById("f").submit();
  document.body.append(Object.assign(document.createElement("p"), { id: "done" }));
});
</script>`, roomURL, roomURL+"/messages", roomURL+"/leave")
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
