package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/hub"
)

// A limitError is a rate limit reached: 429, and try again in a second.
type limitError string

func (e limitError) Error() string { return string(e) }

const (
	errRoomBusy     = limitError("this room is busy: slow down")
	errTooManyJoins = limitError("too many joins from your address: wait a moment")
)

// fail answers a request that cannot be done with its error's status: 401
// without a valid session, 409 for a nick in use, 410 for a nick no longer
// present, 429 at a rate limit, and 503 with Retry-After when the server
// is at a limit or cannot publish.
func (s *server) fail(w http.ResponseWriter, err error) {
	code, retry := http.StatusServiceUnavailable, "1"
	switch {
	case errors.Is(err, errSession):
		code, retry = http.StatusUnauthorized, ""
	case errors.Is(err, errNickTaken):
		code, retry = http.StatusConflict, ""
	case errors.Is(err, errAbsent):
		code, retry = http.StatusGone, ""
	case errors.As(err, new(limitError)):
		code = http.StatusTooManyRequests
	case errors.Is(err, errTooManyRooms), errors.Is(err, errRoomFull), errors.Is(err, clientmgr.ErrTooManyTopics):
		retry = "60"
	default:
		err = s.unexpected(err)
	}
	if retry != "" {
		w.Header().Set("Retry-After", retry)
	}
	http.Error(w, err.Error(), code)
}

// unexpected logs an error no client caused (Redis down, say) and returns
// what the client is told of it.
func (s *server) unexpected(err error) error {
	s.cfg.logger.Warn("chat: cannot serve a request", "err", err)
	return errors.New("cannot do that now: retry")
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
// room's hub topic and the cursor to subscribe to it from (just after the
// history), the room's recent events, who is present, and how often to
// say that the nick is still here.
type joinAnswer struct {
	Nick    string            `json:"nick"`
	Topic   string            `json:"topic"`
	Cursor  clientmgr.Cursor  `json:"cursor"`
	History []json.RawMessage `json:"history"`
	Members []string          `json:"members"`
	RenewMs int64             `json:"renew_ms"`
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
	if err := s.admit(r.Context(), room, ss, addrKey(s.cfg.proxies.client(r))); err != nil {
		s.fail(w, err)
		return
	}
	b, err := s.mgr.History(r.Context(), topicOf(room), clientmgr.Cursor{})
	if err != nil {
		s.fail(w, err)
		return
	}
	s.signer.setCookie(w, ss, s.cfg.proxies.secure(r))
	s.writeJSON(w, joinAnswer{
		Nick: nick, Topic: topicOf(room), Cursor: b.Next,
		History: recent(chatEvents(b.Messages)), Members: s.present(r.Context(), room),
		RenewMs: s.cfg.presence.Milliseconds(),
	})
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

// admit lets a join through its limits, or says which it is over: one of
// the address's joins, one of the room's events, and the session's nick
// present in the room.
func (s *server) admit(ctx context.Context, room string, ss session, addr string) error {
	now := time.Now()
	if !s.joins.allow(addr, now) {
		return errTooManyJoins
	}
	switch ok, err := s.rooms.allow(room, now); {
	case err != nil:
		return err
	case !ok:
		return errRoomBusy
	}
	return s.claim(ctx, room, ss)
}

// here renews the presence of the session's nick in the room: its page
// asks every renew_ms while it shows the room. It answers 410 for a nick
// that is not present (it left, timed out, or was here before a restart):
// only a join makes a nick present.
func (s *server) here(w http.ResponseWriter, r *http.Request) { s.inRoom(w, r, s.renew) }

// leave takes the session's nick out of the room.
func (s *server) leave(w http.ResponseWriter, r *http.Request) { s.inRoom(w, r, s.leaveRoom) }

// inRoom does what the request's session asks in the room of its path,
// and answers 204, or the error as fail does.
func (s *server) inRoom(w http.ResponseWriter, r *http.Request, do func(ctx context.Context, room string, ss session) error) {
	ss, ok := s.session(w, r)
	if !ok {
		return
	}
	if err := do(r.Context(), chi.URLParam(r, "room"), ss); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// members lists the nicks present in the room through this node.
func (s *server) members(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, s.present(r.Context(), chi.URLParam(r, "room")))
}

// A visitor is a hub connection's client as the chat sees it: anyone may
// read every room the node can hold; a client with a session may post in a
// room where its nick is present, as that nick.
type visitor struct {
	s     *server
	ss    session
	valid bool   // ss is a session the chat signed
	addr  string // the client's address, as the join limit keys it
}

// authorize is the hub's Authorizer: it reads the session cookie of the
// request that opens a connection. A WebSocket keeps what it read, so the
// page reconnects after its session changes.
func (s *server) authorize(r *http.Request) (hub.Access, error) {
	ss, ok, _ := s.signer.fromRequest(r)
	return visitor{s: s, ss: ss, valid: ok, addr: addrKey(s.cfg.proxies.client(r))}, nil
}

// Identity is the session: the hub's publish rate (-post-rate) is per
// session, whatever the connections; a client without one is counted by
// its address, and may not post anyway.
func (v visitor) Identity() string {
	if v.valid {
		return v.ss.id
	}
	return ""
}

// CanSubscribe allows a room's topic, if the node holds the room, or has
// room for it and the client may make one: a room that a subscription
// makes costs what a join costs (-join-rate per address), since
// subscriptions naming made-up rooms would otherwise fill the node's
// rooms, and refuse every new one to everyone.
func (v visitor) CanSubscribe(topic string) bool {
	room, ok := roomOf(topic)
	if !ok {
		return false
	}
	now := time.Now()
	if v.s.rooms.use(room, now) {
		return true
	}
	return v.s.joins.allow(v.addr, now) && v.s.rooms.enter(room, now) == nil
}

// CanPublish allows a room's topic to a session whose nick is present in
// the room, and renews that presence, as the page's renewals do. A page
// refused (a session from before a restart, a nick that timed out) joins
// again.
func (v visitor) CanPublish(topic string) bool {
	room, ok := roomOf(topic)
	if !ok || !v.valid {
		return false
	}
	return v.s.renew(context.Background(), room, v.ss) == nil
}

// post is the hub's PublishHook: what a page publishes on a room's topic
// is the text of a message from its session's nick, within the room's
// rate. Its error is what the page is told.
func (s *server) post(_ context.Context, a hub.Access, topic string, data []byte) ([]byte, error) {
	v := a.(visitor)
	room, _ := roomOf(topic) // CanPublish allowed only rooms' topics
	text, err := parseText(string(data))
	if err != nil {
		return nil, err
	}
	switch ok, err := s.rooms.allow(room, time.Now()); {
	case err != nil:
		return nil, err
	case !ok:
		return nil, errRoomBusy
	}
	return marshal(event{Type: "message", Nick: v.ss.nick, Text: text, Time: time.Now().UTC()}), nil
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
	c, err := s.claimHere(ctx, room, ss, now, true)
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

// claimHere marks the session's nick present in the room on this node
// (replacing its other nick there, if replace), after dropping this node's
// record of another session holding it, if that session no longer holds it
// in the shared store.
func (s *server) claimHere(ctx context.Context, room string, ss session, now time.Time, replace bool) (claim, error) {
	c, err := s.rooms.claim(room, ss, now, replace)
	if errors.Is(err, errNickTaken) && s.shared != nil && s.evictStale(ctx, room, ss.nick) {
		c, err = s.rooms.claim(room, ss, now, replace)
	}
	return c, err
}

// renew keeps the session's nick present in the room, if it is: on this
// node, or, with Redis, through any node, which Redis says for every
// renewal (this node then records it too, without announcing it). It never
// makes a nick arrive: errAbsent for one that left (through any node),
// timed out, or was present before a restart.
func (s *server) renew(ctx context.Context, room string, ss session) error {
	now := time.Now()
	present := s.rooms.touch(room, ss, now)
	if s.shared == nil {
		if !present {
			return errAbsent
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	held, err := s.shared.renew(ctx, room, ss)
	switch {
	case err != nil:
		return err
	case !held:
		s.rooms.release(room, ss)
		return errAbsent
	case !present:
		if _, err := s.claimHere(ctx, room, ss, now, false); err != nil {
			return err
		}
	}
	s.rooms.renewed(room, ss, now)
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

// present lists the nicks present in the room through this node. With
// Redis, a nick whose claim the shared store says was given up (it left
// through another node) or taken by another session is dropped first.
func (s *server) present(ctx context.Context, room string) []string {
	if s.shared != nil {
		ctx, cancel := context.WithTimeout(ctx, redisTimeout)
		defer cancel()
		sessions := s.rooms.sessions(room)
		gone, err := s.shared.givenUp(ctx, room, sessions)
		if err != nil {
			s.cfg.logger.Warn("chat: cannot check the members against Redis", "room", room, "err", err)
		}
		for _, ss := range gone {
			s.rooms.release(room, ss)
		}
	}
	return s.rooms.members(room)
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
