package main

import (
	"errors"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

var errBadNick = errors.New("bad nickname: 1-24 letters of one script, digits 0-9, and single spaces, _ . or - between them")

// parseNick accepts a nickname a reader cannot mistake for another by its
// characters alone: after trimming spaces, 1–24 of
//   - letters, all of one script (Latin, Cyrillic, Greek, …), or of the
//     mixes one language writes with (Japanese: Han, Hiragana, Katakana;
//     Korean: Han, Hangul; Chinese: Han, Bopomofo; each with Latin);
//   - the digits 0–9;
//   - a space, '_', '.' or '-', never two in a row.
//
// So no invisible characters (format characters, fillers), no combining
// marks (a letter is one precomposed character), no fullwidth forms, no
// mathematical letters, no Latin letters from the phonetic blocks, and no
// mix such as a Cyrillic "а" in "аlice". Nicks that still look alike
// within one script ("alice", "Alice", "aIice", "a1ice", Cyrillic "ѕсоре"
// and Latin "scope") are told apart by [skeleton]: one room holds one of
// each.
func parseNick(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxNick {
		return "", errBadNick
	}
	var scripts []string
	prevSeparator := false
	for _, r := range s {
		separator := strings.ContainsRune(" _.-", r)
		switch {
		case separator && prevSeparator:
			return "", errBadNick
		case separator, '0' <= r && r <= '9':
		default:
			sc := scriptOf(r)
			if sc == "" {
				return "", errBadNick
			}
			if !slices.Contains(scripts, sc) {
				scripts = append(scripts, sc)
			}
		}
		prevSeparator = separator
	}
	if !oneWritingSystem(scripts) {
		return "", errBadNick
	}
	return s, nil
}

// scriptOf returns the script of a letter a nick may hold, or "" for any
// other character.
func scriptOf(r rune) string {
	switch {
	case r == 'ー': // the Katakana long vowel mark, a modifier letter of the Common script
		return "Katakana"
	case !unicode.IsLetter(r), unicode.Is(unicode.Lm, r),
		0xFF00 <= r && r <= 0xFFEF,            // halfwidth and fullwidth forms
		r == 0x115F, r == 0x1160, r == 0x3164: // Hangul fillers: letters that show nothing
		return ""
	case unicode.Is(unicode.Latin, r):
		// ASCII, Latin-1, Extended-A and -B, and Extended Additional
		// (Vietnamese); not the phonetic and rarer blocks, whose letters
		// imitate these ('ɑ', 'ʟ', 'ᴀ').
		if r < 0x80 || 0xC0 <= r && r <= 0x24F || 0x1E00 <= r && r <= 0x1EFF {
			return "Latin"
		}
		return ""
	}
	for _, name := range scriptNames {
		if unicode.Is(unicode.Scripts[name], r) {
			return name
		}
	}
	return "" // Common or Inherited: symbols, mathematical letters
}

// scriptNames are the scripts a letter of a nick may be of, sorted.
var scriptNames = func() []string {
	var names []string
	for name := range unicode.Scripts {
		if name != "Common" && name != "Inherited" && name != "Latin" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}()

// writingSystems are the mixes of scripts one language writes with; any
// single script is fine too.
var writingSystems = [][]string{
	{"Latin", "Han", "Hiragana", "Katakana"},
	{"Latin", "Han", "Hangul"},
	{"Latin", "Han", "Bopomofo"},
}

func oneWritingSystem(scripts []string) bool {
	if len(scripts) <= 1 {
		return true
	}
	for _, ws := range writingSystems {
		if !slices.ContainsFunc(scripts, func(s string) bool { return !slices.Contains(ws, s) }) {
			return true
		}
	}
	return false
}

// skeleton is what a nick looks like, for telling whether two nicks may
// be taken for each other: letters that look like a Latin letter become
// it (Cyrillic 'а' becomes 'a'), the rest is lower-cased, "rn", "vv" and
// "cl" become "m", "w" and "d", and 'i', 'l', 'I', '1' and their
// lookalikes all become 'l' (in "aIice" a capital I passes for an l, in
// "ALICE" for an i). Two nicks with one skeleton cannot be present in one
// room at once. It is deliberately coarse: "ian" and "lan" cannot share a
// room either.
//
// It is a short table, after Unicode's confusables (UTS #39) for the
// scripts nicks are most often faked in; lookalikes it does not know,
// and those a font makes, remain possible.
func skeleton(nick string) string {
	var b strings.Builder
	for _, r := range nick {
		if s, ok := confusables[r]; ok {
			b.WriteString(s)
		} else {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return lookalikeRuns.Replace(b.String())
}

var lookalikeRuns = strings.NewReplacer("rn", "m", "vv", "w", "cl", "d")

var confusables = map[rune]string{
	// Latin and digits.
	'I': "l", 'i': "l", '1': "l", 'ı': "l", '0': "o",
	// Cyrillic capitals and small letters.
	'А': "a", 'В': "b", 'С': "c", 'Е': "e", 'Н': "h", 'І': "l", 'Ј': "j", 'К': "k", 'М': "m",
	'О': "o", 'Р': "p", 'Ѕ': "s", 'Т': "t", 'Х': "x", 'У': "y", 'Ү': "y", 'Ԛ': "q", 'Ԝ': "w", 'Ӏ': "l",
	'а': "a", 'с': "c", 'е': "e", 'о': "o", 'р': "p", 'х': "x", 'у': "y", 'і': "l", 'ј': "j",
	'ѕ': "s", 'ԁ': "d", 'һ': "h", 'ԛ': "q", 'ԝ': "w", 'ӏ': "l", 'ү': "y",
	// Greek capitals and small letters.
	'Α': "a", 'Β': "b", 'Ε': "e", 'Ζ': "z", 'Η': "h", 'Ι': "l", 'Κ': "k", 'Μ': "m", 'Ν': "n",
	'Ο': "o", 'Ρ': "p", 'Τ': "t", 'Υ': "y", 'Χ': "x",
	'α': "a", 'ο': "o", 'ν': "v", 'ι': "l", 'κ': "k", 'ρ': "p", 'υ': "u", 'χ': "x",
	// Armenian small letters.
	'օ': "o", 'ս': "u", 'հ': "h", 'ո': "n",
}
