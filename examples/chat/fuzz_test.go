package main

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Every parser of client input, fuzzed: it never panics, and what it
// accepts meets the rule it states. (Cursors are clientmgr.ParseCursor's,
// fuzzed in its package.)

func FuzzParseRoom(f *testing.F) {
	for _, s := range []string{"lobby", "a", "-x", "Lobby", "a b", strings.Repeat("a", 33), "room_1-2", "é", "../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		room, err := parseRoom(s)
		if err != nil {
			return
		}
		if room != s || len(room) > 32 || strings.ContainsAny(room, "/. ") || room[0] == '-' || room[0] == '_' {
			t.Fatalf("room %q accepted", s)
		}
	})
}

func FuzzParseNick(f *testing.F) {
	for _, s := range []string{"alice", " bob ", "", "<script>", "a\x00b", "\xff", strings.Repeat("é", 25), "Zoë-2.0",
		"аlice", "ali\u200bce", "alice\u0301", "山田たろう", "ａｌｉｃｅ", "a  b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nick, err := parseNick(s)
		if err != nil {
			return
		}
		if nick == "" || !utf8.ValidString(nick) || utf8.RuneCountInString(nick) > maxNick ||
			strings.ContainsAny(nick, "<>&\"'\x00\n") || nick != strings.TrimSpace(nick) ||
			strings.Contains(nick, "  ") {
			t.Fatalf("nick %q accepted from %q", nick, s)
		}
		for _, r := range nick {
			if unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc, unicode.Cf, unicode.Cc, unicode.Co, unicode.Cs) {
				t.Fatalf("nick %q with invisible or combining %U accepted", nick, r)
			}
		}
		if sk := skeleton(nick); sk == "" || sk != skeleton(nick) {
			t.Fatalf("nick %q has skeleton %q", nick, sk)
		}
	})
}

func FuzzParseText(f *testing.F) {
	for _, s := range []string{"hi", "", "  ", "\xff", "line\nbreak", "a\x07b", strings.Repeat("x", 1001), "<b>bold</b>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		text, err := parseText(s)
		if err != nil {
			return
		}
		if text != s || !utf8.ValidString(text) || utf8.RuneCountInString(text) > maxMessage || strings.TrimSpace(text) == "" {
			t.Fatalf("text %q accepted", s)
		}
		for _, r := range text {
			if r < 0x20 && r != '\n' && r != '\t' {
				t.Fatalf("text %q with control character accepted", s)
			}
		}
	})
}

// FuzzSessionToken: a cookie value is accepted only as the signer made
// it: anything else is errSession, never a panic, never another session.
func FuzzSessionToken(f *testing.F) {
	s := signer{key: []byte(strings.Repeat("k", 32))}
	now := time.Unix(1_800_000_000, 0)
	good := s.token(session{id: "AAAAAAAAAAAAAAAAAAAAAA", nick: "alice"}, now)
	for _, tok := range []string{good, "", ".", good + "x", strings.Replace(good, ".", "..", 1), "a.b", strings.Repeat("A", 300)} {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		ss, err := s.parse(tok, now)
		if err != nil {
			return
		}
		if tok != good || ss.nick != "alice" || ss.id != "AAAAAAAAAAAAAAAAAAAAAA" {
			t.Fatalf("token %q accepted as %+v", tok, ss)
		}
	})
}
