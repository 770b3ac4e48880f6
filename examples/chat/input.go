package main

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what clients send.
const (
	maxNick       = 24
	maxMessage    = 1000
	historyOnJoin = 50
)

var roomPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// parseRoom accepts 1–32 characters of a–z, 0–9, '_' and '-', starting
// with a letter or digit.
func parseRoom(s string) (string, error) {
	if !roomPattern.MatchString(s) {
		return "", errors.New("bad room name: use 1-32 of a-z, 0-9, _ and -")
	}
	return s, nil
}

// parseNick accepts 1–24 letters, digits, spaces, '_', '.' and '-', after
// trimming spaces.
func parseNick(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxNick {
		return "", errors.New("bad nickname: 1-24 letters, digits, spaces, _ . -")
	}
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune(" _.-", r) {
			return "", errors.New("bad nickname: 1-24 letters, digits, spaces, _ . -")
		}
	}
	return s, nil
}

// parseText accepts 1–1000 characters of valid UTF-8 with no control
// characters other than newlines and tabs.
func parseText(s string) (string, error) {
	switch {
	case strings.TrimSpace(s) == "":
		return "", errors.New("empty message")
	case !utf8.ValidString(s):
		return "", errors.New("message is not valid UTF-8")
	case utf8.RuneCountInString(s) > maxMessage:
		return "", errors.New("message too long: at most 1000 characters")
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return "", errors.New("message has control characters")
		}
	}
	return s, nil
}

// parseCursor reads a client's cursor (?since= or Last-Event-ID): a
// message sequence number, 0 or more; "" means 0.
func parseCursor(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New("bad cursor: a message sequence number (0 or more)")
	}
	return n, nil
}
