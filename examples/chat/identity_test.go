package main

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A nick belongs to the session that joined with it: posts act as the
// session's nick whatever the page sends, another session cannot take it
// (or one that looks like it) while it is present, and a session cookie
// cannot be forged or altered.
func TestNickBelongsToItsSession(t *testing.T) {
	c := newChat(t)
	alice, mallory := c.person(), c.person()
	alice.join("lobby", "alice")

	resp := alice.post("/rooms/lobby/join", url.Values{"nick": {"alice"}})
	require.Equal(t, http.StatusOK, resp.StatusCode, "joining again keeps the nick")
	cookie := resp.Cookies()[0]
	assert.Equal(t, sessionCookie, cookie.Name)
	assert.True(t, cookie.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	assert.Equal(t, "/", cookie.Path)

	for _, nick := range []string{"alice", "Alice", "ALICE", "aIice", "a1ice", " alice "} {
		resp := mallory.post("/rooms/lobby/join", url.Values{"nick": {nick}})
		assert.Equal(t, http.StatusConflict, resp.StatusCode, "%q while alice is present", nick)
		assert.Contains(t, body(t, resp), "nickname is in use")
	}
	mallory.join("lobby", "mallory")
	// A publish names no nick: mallory posts as mallory.
	_, frames := mallory.longPoll(op{"op": "publish", "topic": "room:lobby", "data": "hi", "nick": "alice"})
	assert.Equal(t, "published", frames[0].Type)
	// Leaving takes mallory's own nick out, not alice's.
	mallory.post("/rooms/lobby/leave", url.Values{"nick": {"alice"}})
	assert.Equal(t, []string{"alice"}, alice.members("lobby"))
	// Following the room makes no one present.
	bob := c.person()
	bob.poll("lobby", "")
	assert.Equal(t, []string{"alice"}, alice.members("lobby"))
	assert.Equal(t, "forbidden", bob.say("lobby", "not joined"))

	evs := alice.poll("lobby", "0").Events
	assert.Equal(t, []string{"join:alice:", "join:mallory:", "message:mallory:hi", "leave:mallory:"}, texts(evs))

	// A cookie whose nick was changed, or signed with another key, or
	// expired, is no session: no presence, no post.
	forge := func(tok string) (here int, post string) {
		forger := c.person()
		u, _ := url.Parse(c.ts.URL)
		forger.client.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: tok}})
		return forger.here("lobby"), forger.say("lobby", "forged")
	}
	good := cookie.Value
	here, post := forge(good)
	assert.Equal(t, http.StatusNoContent, here)
	assert.Equal(t, "published", post)
	mine := session{id: newSessionID(), nick: "alice"}
	other := signer{key: randomBytes(32)}
	payload, sig, _ := strings.Cut(good, ".")
	for name, tok := range map[string]string{
		"signed with another key": other.token(mine, time.Now()),
		"expired":                 c.s.signer.token(mine, time.Now().Add(-sessionLifetime)),
		"altered":                 payload[:len(payload)-2] + "AA." + sig,
		"unsigned":                payload,
	} {
		here, post := forge(tok)
		assert.Equal(t, http.StatusUnauthorized, here, name)
		assert.Equal(t, "forbidden", post, name)
	}

	// Once alice leaves, her nick is free.
	alice.post("/rooms/lobby/leave", nil)
	assert.Equal(t, "alice", mallory.join("lobby", "alice").Nick)
}

// A session has one nick in a room: joining again with another replaces
// it, with a leave and a join. Presence is renewed, never taken back: a
// renewal or a post for a nick that is no longer present (it left, or the
// server restarted with the same key) is refused, and only a join makes
// it present again.
func TestSessionChangesNick(t *testing.T) {
	c := newChat(t)
	p := c.person()
	j := p.join("lobby", "al")
	p.join("lobby", "alfred")
	assert.Equal(t, []string{"alfred"}, p.members("lobby"))
	a := p.poll("lobby", j.Cursor)
	assert.Equal(t, []string{"leave:al:", "join:alfred:"}, texts(a.Events))
	assert.Equal(t, "published", p.say("lobby", "hello"))
	assert.Equal(t, []string{"message:alfred:hello"}, texts(p.poll("lobby", a.Next).Events))
	assert.Equal(t, http.StatusNoContent, p.here("lobby"))

	c.s.rooms.release("lobby", session{id: "", nick: "alfred"}) // another session's release does nothing
	assert.Equal(t, []string{"alfred"}, p.members("lobby"))
	c.s.rooms.release("lobby", session{id: sessionOf(t, c, p), nick: "alfred"}) // as a restart forgets it
	assert.Empty(t, p.members("lobby"))
	assert.Equal(t, http.StatusGone, p.here("lobby"))
	assert.Equal(t, "forbidden", p.say("lobby", "still here?"))
	assert.Empty(t, p.members("lobby"), "neither made alfred present again")
	p.join("lobby", "alfred")
	assert.Equal(t, []string{"alfred"}, p.members("lobby"))
	assert.Equal(t, "published", p.say("lobby", "back"))
}

// sessionOf reads the session a person's cookie holds.
func sessionOf(t *testing.T, c *chat, p *person) string {
	t.Helper()
	u, _ := url.Parse(c.ts.URL)
	for _, ck := range p.client.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			ss, err := c.s.signer.parse(ck.Value, time.Now())
			require.NoError(t, err)
			return ss.id
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// Rate limits hold per session and per room: rotating nicks, or the
// forwarding headers a client makes up, gives no more posts, and a refused
// post says when to try again.
func TestRateLimits(t *testing.T) {
	c := newChat(t)
	alice := c.person()
	alice.join("lobby", "alice")
	burst := burstOf(c.s.cfg.postRate)
	var results []string
	for i := range burst + 4 {
		// A new nick each time, in the same session, and made-up addresses.
		alice.post("/rooms/lobby/join", url.Values{"nick": {"alice" + strings.Repeat("x", i)}})
		status, frames := alice.longPoll(op{"op": "publish", "topic": "room:lobby", "data": "hi"})
		require.Equal(t, http.StatusOK, status)
		if frames[0].Type == "published" {
			results = append(results, "published")
			continue
		}
		results = append(results, frames[0].Code)
		assert.Positive(t, frames[0].RetryMs, "%+v", frames[0])
	}
	allowed := 0
	for _, r := range results {
		if r == "published" {
			allowed++
		} else {
			assert.Equal(t, "rate_limited", r)
		}
	}
	assert.LessOrEqual(t, allowed, burst+1, "posts allowed of %v", results)
	assert.GreaterOrEqual(t, allowed, burst, "posts allowed of %v", results)
	bob := c.person()
	bob.join("lobby", "bob")
	assert.Equal(t, "published", bob.say("lobby", "hi"), "the limit is per session")

	// The room's limit holds over every session in it.
	room := newChat(t, func(cfg *config) { cfg.roomRate = 1 })
	var codes []int
	for i := range 6 {
		codes = append(codes, room.person().post("/rooms/busy/join", url.Values{"nick": {"n" + strconv.Itoa(i)}}).StatusCode)
	}
	assert.Equal(t, []int{200, 200, 200, 429, 429, 429}, codes, "a burst of three seconds' worth, per room")
	p := room.person()
	p.join("quiet", "q")
	for range 2 {
		p.say("quiet", "within the room's burst")
	}
	assert.Equal(t, "rejected", p.say("quiet", "one more"), "this room is busy")
}

// Joins, which make sessions, are limited per client address: the
// connection's peer, or, behind a trusted proxy, the address the proxy
// reports; never what a client writes in a header.
func TestJoinLimitPerAddress(t *testing.T) {
	c := newChat(t, func(cfg *config) { cfg.joinRate = 1 })
	var codes []int
	for i := range 5 {
		resp := c.person().post("/rooms/lobby/join", url.Values{"nick": {"n" + strconv.Itoa(i)}},
			"X-Forwarded-For", "10.0.0."+strconv.Itoa(i), "X-Real-IP", "10.1.0."+strconv.Itoa(i), "True-Client-IP", "10.2.0."+strconv.Itoa(i))
		codes = append(codes, resp.StatusCode)
	}
	assert.Equal(t, []int{200, 200, 200, 429, 429}, codes)
}

func TestClientAddress(t *testing.T) {
	loopback, err := parseProxies("127.0.0.1, 10.0.0.0/8")
	require.NoError(t, err)
	_, err = parseProxies("10.0.0.0/33")
	assert.Error(t, err)
	_, err = parseProxies("nginx")
	assert.Error(t, err)
	tests := []struct {
		name    string
		proxies proxies
		peer    string
		xff     []string
		want    string
	}{
		{"no proxies: the peer", nil, "127.0.0.1:5000", []string{"1.2.3.4"}, "127.0.0.1"},
		{"untrusted peer: the peer", loopback, "192.0.2.7:5000", []string{"1.2.3.4"}, "192.0.2.7"},
		{"trusted peer: the address it adds", loopback, "127.0.0.1:5000", []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},
		{"a chain of trusted proxies", loopback, "127.0.0.1:5000", []string{"6.6.6.6, 1.2.3.4", "10.1.1.1"}, "1.2.3.4"},
		{"with a port", loopback, "127.0.0.1:5000", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"garbage from a trusted proxy: the proxy", loopback, "127.0.0.1:5000", []string{"1.2.3.4, nginx"}, "127.0.0.1"},
		{"no header from a trusted proxy: the proxy", loopback, "127.0.0.1:5000", nil, "127.0.0.1"},
		{"only trusted hops: the leftmost", loopback, "127.0.0.1:5000", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.peer
			r.Header.Set("X-Real-IP", "9.9.9.9")
			r.Header.Set("True-Client-IP", "9.9.9.9")
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			assert.Equal(t, netip.MustParseAddr(tt.want), tt.proxies.client(r))
		})
	}
	assert.Equal(t, "2001:db8:1:2::/64", addrKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")), "an IPv6 client is its /64")
	assert.Equal(t, "192.0.2.1", addrKey(netip.MustParseAddr("192.0.2.1")))

	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	r.Header.Set("X-Forwarded-Proto", "https")
	assert.True(t, loopback.secure(r), "HTTPS, says a trusted proxy")
	assert.False(t, proxies(nil).secure(r), "HTTPS, says the client")
}

func TestNicks(t *testing.T) {
	for _, nick := range []string{"alice", "Zoë-2.0", "bob smith", "ñandú", "Дмитрий", "Σωκράτης", "山田たろう", "김민준", "taro山田", "o", "x_y.z-1"} {
		got, err := parseNick(nick)
		assert.NoError(t, err, nick)
		assert.Equal(t, nick, got)
	}
	for _, nick := range []string{
		"аlice",       // Cyrillic а with Latin
		"alicе",       // Cyrillic е at the end
		"ali\u200bce", // zero-width space
		"ali\u200dce", // zero-width joiner
		"alice\u0301", // combining acute accent
		"a\u00adlice", // soft hyphen
		"ａｌｉｃｅ",       // fullwidth
		"𝐚𝐥𝐢𝐜𝐞",       // mathematical bold
		"ɑlice",       // Latin alpha (IPA)
		"al  ice",     // two spaces (HTML shows one)
		"al_-ice",     // two separators
		"\u3164",      // Hangul filler
		"alice\u3164", // Hangul filler after
		"ali٣ce",      // Arabic-Indic digit
		"Ωmega",       // Greek and Latin
		"<b>",         // markup
		"",            // empty
		strings.Repeat("a", maxNick+1),
	} {
		_, err := parseNick(nick)
		assert.ErrorIs(t, err, errBadNick, "%q", nick)
	}

	same := [][]string{
		{"alice", "Alice", "ALICE", "aIice", "a1ice", "AIice"},
		{"scope", "ѕсоре"}, // all Cyrillic
		{"modern", "rnodern"},
		{"Oslo", "0slo"},
		{"Ivan", "lvan", "ivan"},
		{"ian", "lan"},
		{"TOMA", "ΤΟΜΑ"}, // Greek capitals
		{"HAM", "НАМ"},   // Cyrillic capitals
	}
	for _, group := range same {
		for _, nick := range group[1:] {
			assert.Equal(t, skeleton(group[0]), skeleton(nick), "%q and %q look alike", group[0], nick)
		}
	}
	assert.NotEqual(t, skeleton("alice"), skeleton("alicia"))
}
