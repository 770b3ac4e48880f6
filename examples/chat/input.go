package main

import (
	"errors"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what clients send and what the chat answers.
const (
	maxNick          = 24       // characters in a nickname
	maxMessage       = 1000     // characters in a message
	historyOnJoin    = 50       // events a join answer shows at most
	historyOnJoinLen = 64 << 10 // bytes of events a join answer shows at most
	maxMembers       = 500      // nicks present in one room at once
)

var roomPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

var errBadRoom = errors.New("bad room name: use 1-32 of a-z, 0-9, _ and -")

// parseRoom accepts 1–32 characters of a–z, 0–9, '_' and '-', starting
// with a letter or digit.
func parseRoom(s string) (string, error) {
	if !roomPattern.MatchString(s) {
		return "", errBadRoom
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
