package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cometkit/cometkit/clientmgr"
)

// A limitError is a rate limit reached: 429, and try again in a second.
type limitError string

func (e limitError) Error() string { return string(e) }

const (
	errTooFast      = limitError("too many messages: slow down")
	errRoomBusy     = limitError("this room is busy: slow down")
	errTooManyJoins = limitError("too many joins from your address: wait a moment")
)

// errBusy is a wait refused: the server is shutting down or overloaded.
var errBusy = errors.New("server busy: retry")

// fail answers a request that cannot be done with its error's status: 401
// without a valid session, 409 for a nick in use, 429 at a rate limit, and
// 503 with Retry-After when the server is at a limit or cannot publish.
func (s *server) fail(w http.ResponseWriter, err error) {
	code, retry := http.StatusServiceUnavailable, "1"
	switch {
	case errors.Is(err, errSession):
		code, retry = http.StatusUnauthorized, ""
	case errors.Is(err, errNickTaken):
		code, retry = http.StatusConflict, ""
	case errors.As(err, new(limitError)):
		code = http.StatusTooManyRequests
	case errors.Is(err, errBusy):
	case errors.Is(err, errTooManyRooms), errors.Is(err, errRoomFull), errors.Is(err, clientmgr.ErrTooManyTopics):
		retry = "60"
	default:
		s.cfg.logger.Warn("chat: cannot serve a request", "err", err)
		err = errors.New("cannot do that now: retry")
	}
	if retry != "" {
		w.Header().Set("Retry-After", retry)
	}
	http.Error(w, err.Error(), code)
}

// form reads a POST's form of at most limit bytes; a larger one is
// refused with 413, a malformed one with 400.
func form(w http.ResponseWriter, r *http.Request, limit int64) bool {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := r.ParseForm(); err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		}
		return false
	}
	return true
}

// session returns the request's valid session, or answers 401.
func (s *server) session(w http.ResponseWriter, r *http.Request) (session, bool) {
	ss, ok, _ := s.signer.fromRequest(r)
	if !ok {
		s.fail(w, errSession)
	}
	return ss, ok
}

// A joinAnswer is what a join returns: the nick the session now has, the
// room's recent events, who is present, and the cursor to subscribe from.
type joinAnswer struct {
	Nick    string            `json:"nick"`
	Cursor  clientmgr.Cursor  `json:"cursor"`
	History []json.RawMessage `json:"history"`
	Members []string          `json:"members"`
}

// join enters the room with the nick in the form, and gives the client a
// session holding that nick (the one it had, if any, with the new nick).
// The answer holds the room's last events, at most historyOnJoin of them
// and historyOnJoinLen bytes, and its members, at most maxMembers.
func (s *server) join(w http.ResponseWriter, r *http.Request) {
	if !form(w, r, 4<<10) {
		return
	}
	nick, err := parseNick(r.PostForm.Get("nick"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ss, ok, _ := s.signer.fromRequest(r)
	if !ok {
		ss.id = newSessionID()
	}
	ss.nick = nick
	room := chi.URLParam(r, "room")
	if err := s.admit(r.Context(), room, ss, s.joins, addrKey(s.cfg.proxies.client(r)), errTooManyJoins); err != nil {
		s.fail(w, err)
		return
	}
	b, err := s.mgr.History(r.Context(), topicOf(room), clientmgr.Cursor{})
	if err != nil {
		s.fail(w, err)
		return
	}
	s.signer.setCookie(w, ss, s.cfg.proxies.secure(r))
	writeJSON(w, joinAnswer{Nick: nick, Cursor: b.Next, History: recent(chatEvents(b.Messages)), Members: s.rooms.members(room)})
}

// recent returns the last events, at most historyOnJoin of them and
// historyOnJoinLen bytes.
func recent(evs []stored) []json.RawMessage {
	out := []json.RawMessage{}
	size := 0
	for i := len(evs) - 1; i >= 0 && len(out) < historyOnJoin; i-- {
		if size += len(evs[i].data); size > historyOnJoinLen {
			break
		}
		out = append(out, evs[i].data)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// admit lets a write through its limits, or says which it is over: one
// event of key's allowance in limits (over, if none is left), one of the
// room's, and the session's nick present in the room.
func (s *server) admit(ctx context.Context, room string, ss session, limits *limiters, key string, over error) error {
	now := time.Now()
	if !limits.allow(key, now) {
		return over
	}
	switch ok, err := s.rooms.allow(room, now); {
	case err != nil:
		return err
	case !ok:
		return errRoomBusy
	}
	return s.claim(ctx, room, ss)
}

// leave takes the session's nick out of the room.
func (s *server) leave(w http.ResponseWriter, r *http.Request) {
	ss, ok := s.session(w, r)
	if !ok {
		return
	}
	if err := s.leaveRoom(r.Context(), chi.URLParam(r, "room"), ss); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// post publishes a message from the session's nick, which it makes
// present in the room if it was not (after a restart, say).
func (s *server) post(w http.ResponseWriter, r *http.Request) {
	if !form(w, r, 16<<10) {
		return
	}
	ss, ok := s.session(w, r)
	if !ok {
		return
	}
	text, err := parseText(r.PostForm.Get("text"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	room := chi.URLParam(r, "room")
	if err := s.admit(r.Context(), room, ss, s.posts, ss.id, errTooFast); err != nil {
		s.fail(w, err)
		return
	}
	if err := s.publish(r.Context(), room, event{Type: "message", Nick: ss.nick, Text: text}); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// members lists the nicks present in the room on this node.
func (s *server) members(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.rooms.members(chi.URLParam(r, "room")))
}

// claim makes the session's nick present in the room, on this node and,
// with Redis, for every node: errNickTaken if another session holds it
// (or one that looks like it), errRoomFull, errTooManyRooms. It announces
// the nick when it arrives, and the departure of a nick the session had
// in the room before.
func (s *server) claim(ctx context.Context, room string, ss session) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	now := time.Now()
	c, err := s.rooms.claim(room, ss, now)
	if errors.Is(err, errNickTaken) && s.shared != nil && s.evictStale(ctx, room, ss.nick) {
		c, err = s.rooms.claim(room, ss, now)
	}
	if err != nil {
		return err
	}
	arrived := c.arrived
	if s.shared != nil && c.renew {
		fresh, err := s.shared.claim(ctx, room, ss)
		if err != nil {
			if c.arrived {
				s.rooms.release(room, ss)
			}
			return err
		}
		s.rooms.renewed(room, ss, now)
		arrived = arrived && fresh // not new to the room: present through another node
	}
	for _, nick := range c.replaced {
		old := session{id: ss.id, nick: nick}
		if s.shared != nil {
			s.shared.release(ctx, room, old)
		}
		if err := s.publish(ctx, room, event{Type: "leave", Nick: nick}); err != nil {
			return err
		}
	}
	if arrived {
		return s.publish(ctx, room, event{Type: "join", Nick: ss.nick})
	}
	return nil
}

// evictStale drops this node's record of the session holding nick in
// the room if that session no longer holds it in the shared store: it
// left, or timed out, through another node. It reports whether it did.
func (s *server) evictStale(ctx context.Context, room, nick string) bool {
	holder, ok := s.rooms.holder(room, nick)
	if !ok {
		return false
	}
	held, err := s.shared.holds(ctx, room, holder)
	if err != nil || held {
		return false
	}
	return s.rooms.release(room, holder)
}

// leaveRoom takes the session's nick out of the room, here and in the
// shared store, and announces it if it was present.
func (s *server) leaveRoom(ctx context.Context, room string, ss session) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	present := s.rooms.release(room, ss)
	if s.shared != nil {
		released, err := s.shared.release(ctx, room, ss)
		if err != nil {
			return err
		}
		present = present || released
	}
	if !present {
		return nil
	}
	return s.publish(ctx, room, event{Type: "leave", Nick: ss.nick})
}
