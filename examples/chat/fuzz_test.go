package main

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Every parser of client input, fuzzed: it never panics, and what it
// accepts meets the rule it states.

func FuzzParseCursor(f *testing.F) { // ?since= and Last-Event-ID
	for _, s := range []string{"", "0", "42", "-1", "abc", "18446744073709551615", "18446744073709551616", "007", " 1", "1e3", "+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCursor(s)
		if err != nil {
			return
		}
		if s == "" {
			if n != 0 {
				t.Fatalf("empty cursor gave %d", n)
			}
			return
		}
		if back, err := strconv.ParseUint(strconv.FormatUint(n, 10), 10, 64); err != nil || back != n {
			t.Fatalf("cursor %q accepted as %d", s, n)
		}
		if strings.TrimLeft(s, "0123456789") != "" {
			t.Fatalf("cursor %q has non-digits but was accepted", s)
		}
	})
}

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
	for _, s := range []string{"alice", " bob ", "", "<script>", "a\x00b", "\xff", strings.Repeat("é", 25), "Zoë-2.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nick, err := parseNick(s)
		if err != nil {
			return
		}
		if nick == "" || !utf8.ValidString(nick) || utf8.RuneCountInString(nick) > maxNick ||
			strings.ContainsAny(nick, "<>&\"'\x00\n") || nick != strings.TrimSpace(nick) {
			t.Fatalf("nick %q accepted from %q", nick, s)
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
