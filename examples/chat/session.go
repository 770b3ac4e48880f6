package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A session is who a client is: the id its first join gave it, and the
// nick it last joined with. Posting, leaving and being present while
// subscribed all act as the session's nick; no form field names one.
type session struct {
	id   string
	nick string
}

const (
	sessionCookie   = "chat_session"
	sessionLifetime = 24 * time.Hour // a token's validity; joining again renews it
	sessionIDLen    = 16             // random bytes of an id
	// sessionKeyEnv names the environment variable with the key that signs
	// sessions: give every node of a deployment the same one.
	sessionKeyEnv = "CHAT_SESSION_SECRET"
	minSessionKey = 32 // bytes of a key given in sessionKeyEnv
	// redisSessionKey is where nodes sharing a Redis keep the key they
	// sign with, when none is given.
	redisSessionKey = "cometkit:chat:session-key"
)

var errSession = errors.New("session expired or invalid: join again")

// A signer issues and checks session tokens: the session's id, its
// expiry and its nick, signed with HMAC-SHA256, so any node with the key
// can check a token, and no client can change the nick in it.
type signer struct{ key []byte }

// domain separates the chat's signatures from anything else made with
// the same key.
const domain = "cometkit chat session v1\x00"

func (s signer) sign(payload []byte) []byte {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(domain))
	mac.Write(payload)
	return mac.Sum(nil)
}

// token returns the session as a cookie value: base64url(id, expiry,
// nick) "." base64url(signature).
func (s signer) token(ss session, now time.Time) string {
	payload := make([]byte, 0, sessionIDLen+8+len(ss.nick))
	id, _ := base64.RawURLEncoding.DecodeString(ss.id)
	payload = append(payload, id...)
	payload = binary.BigEndian.AppendUint64(payload, uint64(now.Add(sessionLifetime).Unix()))
	payload = append(payload, ss.nick...)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(s.sign(payload))
}

// parse checks a token and returns its session: errSession for one that
// is malformed, not signed with the key, expired, or with a nick the chat
// would not accept.
func (s signer) parse(tok string, now time.Time) (session, error) {
	body, sig, ok := strings.Cut(tok, ".")
	if !ok || len(tok) > 256 {
		return session{}, errSession
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(body)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || len(payload) <= sessionIDLen+8 || !hmac.Equal(mac, s.sign(payload)) {
		return session{}, errSession
	}
	expiry := int64(binary.BigEndian.Uint64(payload[sessionIDLen:]))
	nick, err := parseNick(string(payload[sessionIDLen+8:]))
	if err != nil || now.Unix() >= expiry || nick != string(payload[sessionIDLen+8:]) {
		return session{}, errSession
	}
	return session{id: base64.RawURLEncoding.EncodeToString(payload[:sessionIDLen]), nick: nick}, nil
}

// newSessionID returns a random session id.
func newSessionID() string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(sessionIDLen))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return b
}

// fromRequest returns the request's session: ok false when it has no
// session cookie, errSession when the cookie's token does not check.
func (s signer) fromRequest(r *http.Request) (ss session, ok bool, err error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false, nil
	}
	ss, err = s.parse(c.Value, time.Now())
	return ss, err == nil, err
}

// setCookie gives the client its session: HttpOnly, so no script reads
// it; SameSite=Strict, so no other site's page makes the browser send it;
// Secure when the client reached us over HTTPS.
func (s signer) setCookie(w http.ResponseWriter, ss session, secure bool) {
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    s.token(ss, time.Now()),
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   secure,
	})
}

// sessionKey returns the key sessions are signed with, chosen so that a
// session works on every node that shares the rooms: the key given in
// $CHAT_SESSION_SECRET (at least 32 bytes); else, with Redis, the one the
// first node stored there (SETNX), which every node then reads; else a
// random key for this process, so sessions end when it does (the page
// joins again by itself).
func sessionKey(ctx context.Context, given string, rdb *redis.Client) ([]byte, error) {
	switch {
	case given != "":
		if len(given) < minSessionKey {
			return nil, fmt.Errorf("chat: $%s has %d bytes; give at least %d random ones", sessionKeyEnv, len(given), minSessionKey)
		}
		return []byte(given), nil
	case rdb != nil:
		if err := rdb.SetNX(ctx, redisSessionKey, hex.EncodeToString(randomBytes(32)), 0).Err(); err != nil {
			return nil, fmt.Errorf("chat: storing the session key in Redis: %w", err)
		}
		stored, err := rdb.Get(ctx, redisSessionKey).Bytes()
		if err != nil {
			return nil, fmt.Errorf("chat: reading the session key from Redis: %w", err)
		}
		if len(bytes.TrimSpace(stored)) < minSessionKey {
			return nil, fmt.Errorf("chat: the session key in Redis (%s) is shorter than %d bytes", redisSessionKey, minSessionKey)
		}
		return stored, nil
	default:
		return randomBytes(32), nil
	}
}
