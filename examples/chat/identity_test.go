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

// A nick belongs to the session that joined with it: writes act as the
// session's nick whatever the form says, another session cannot take it
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
	// The form's nick is not read: mallory posts as mallory.
	assert.Equal(t, http.StatusNoContent, mallory.post("/rooms/lobby/messages", url.Values{"nick": {"alice"}, "text": {"hi"}}).StatusCode)
	// Leaving takes mallory's own nick out, not alice's.
	mallory.post("/rooms/lobby/leave", url.Values{"nick": {"alice"}})
	assert.Equal(t, []string{"alice"}, alice.members("lobby"))
	// Subscribing with ?nick= makes no one present.
	assert.Equal(t, http.StatusOK, c.person().get("/rooms/lobby/subscribe?since=&nick=bob").StatusCode)
	assert.Equal(t, []string{"alice"}, alice.members("lobby"))

	evs := alice.poll("lobby", "").Events
	assert.Equal(t, []string{"join:alice:", "join:mallory:", "message:mallory:hi", "leave:mallory:"}, texts(evs))

	// A cookie whose nick was changed, or signed with another key, or
	// expired, is refused.
	forge := func(tok string) int {
		req, _ := http.NewRequest(http.MethodPost, c.ts.URL+"/rooms/lobby/messages", strings.NewReader("text=forged"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: tok})
		resp, err := c.ts.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	good := cookie.Value
	assert.Equal(t, http.StatusNoContent, forge(good))
	mine := session{id: newSessionID(), nick: "alice"}
	other := signer{key: randomBytes(32)}
	assert.Equal(t, http.StatusUnauthorized, forge(other.token(mine, time.Now())), "signed with another key")
	assert.Equal(t, http.StatusUnauthorized, forge(c.s.signer.token(mine, time.Now().Add(-sessionLifetime))), "expired")
	payload, sig, _ := strings.Cut(good, ".")
	assert.Equal(t, http.StatusUnauthorized, forge(payload[:len(payload)-2]+"AA."+sig), "altered")
	assert.Equal(t, http.StatusUnauthorized, forge(payload), "unsigned")

	// Once alice leaves, her nick is free.
	alice.post("/rooms/lobby/leave", nil)
	assert.Equal(t, "alice", mallory.join("lobby", "alice").Nick)
}

// A session has one nick in a room: joining again with another replaces
// it, with a leave and a join; a subscription with a session keeps its
// nick present.
func TestSessionChangesNick(t *testing.T) {
	c := newChat(t)
	p := c.person()
	j := p.join("lobby", "al")
	p.join("lobby", "alfred")
	assert.Equal(t, []string{"alfred"}, p.members("lobby"))
	a := p.poll("lobby", j.Cursor)
	assert.Equal(t, []string{"leave:al:", "join:alfred:"}, texts(a.Events))
	assert.Equal(t, http.StatusNoContent, p.say("lobby", "hello"))
	assert.Equal(t, []string{"message:alfred:hello"}, texts(p.poll("lobby", a.Next).Events))

	// After a restart that kept the key, the session's nick comes back by
	// itself when its client polls (or posts).
	c.s.rooms.release("lobby", session{id: "", nick: "alfred"}) // another session's release does nothing
	assert.Equal(t, []string{"alfred"}, p.members("lobby"))
	p.post("/rooms/lobby/leave", nil)
	assert.Empty(t, p.members("lobby"))
	p.poll("lobby", "")
	assert.Equal(t, []string{"alfred"}, p.members("lobby"))
}

// Rate limits hold per session and per room: rotating nicks, or the
// forwarding headers a client makes up, gives no more posts.
func TestRateLimits(t *testing.T) {
	c := newChat(t)
	alice := c.person()
	alice.join("lobby", "alice")
	burst := burstOf(c.s.cfg.postRate)
	var codes []int
	for i := range burst + 4 {
		// A new nick each time, in the same session, and made-up addresses.
		alice.post("/rooms/lobby/join", url.Values{"nick": {"alice" + strings.Repeat("x", i)}})
		resp := alice.post("/rooms/lobby/messages", url.Values{"text": {"hi"}},
			"X-Forwarded-For", "10.0.0."+strconv.Itoa(i), "X-Real-IP", "10.1.0."+strconv.Itoa(i), "True-Client-IP", "10.2.0."+strconv.Itoa(i))
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			assert.Equal(t, "1", resp.Header.Get("Retry-After"))
		}
	}
	allowed := 0
	for _, code := range codes {
		if code == http.StatusNoContent {
			allowed++
		}
	}
	assert.LessOrEqual(t, allowed, burst+1, "posts allowed of %v", codes)
	assert.GreaterOrEqual(t, allowed, burst, "posts allowed of %v", codes)
	bob := c.person()
	bob.join("lobby", "bob")
	assert.Equal(t, http.StatusNoContent, bob.say("lobby", "hi"), "the limit is per session")

	// The room's limit holds over every session in it.
	room := newChat(t, func(cfg *config) { cfg.roomRate = 1 })
	codes = nil
	for i := range 6 {
		codes = append(codes, room.person().post("/rooms/busy/join", url.Values{"nick": {"n" + strconv.Itoa(i)}}).StatusCode)
	}
	assert.Equal(t, []int{200, 200, 200, 429, 429, 429}, codes, "a burst of three seconds' worth, per room")
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
