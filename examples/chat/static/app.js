// The chat page: join a room (with the form, or by itself after a reload),
// then follow the room's topic on the hub with the hub's own client, which
// picks the transport, resumes from its cursor after any break, says when
// messages may have been missed, and shares one connection among the
// browser's tabs. Posting is a publish on the topic. Who we are is the
// session cookie join sets; while the page shows the room it says, every
// renew_ms, that we are still here. When the server no longer counts us
// present (a restart, a long sleep), the page joins again. Everything
// shown is set with textContent, never parsed as HTML.
import { Hub } from "/hub/client.js";

const $ = (id) => document.getElementById(id);

// ?transport=websocket, sse or longpoll forces one (for tests); without it
// the client picks the best that works.
const forced = new URLSearchParams(location.search).get("transport");

// The nick this browser joined with last (one browser is one person), and
// the room this tab shows, so that a reload joins it again as the same
// nick, which the room does not even see.
const stored = { nick: "chat.nick", room: "chat.room" };

let hub = null; // the connection to the hub, made on the first join
// session: {room, nick, topic, sub, renewal, rejoining, stopped, and the
// member list: members, and the joins and leaves applied to it, changes,
// the last of changed in all}
let session = null;

// One browser is one session, with one nick: joining in another tab or
// window of this browser changes it, and leaving in one leaves in all.
// Tabs tell each other, and a tab whose nick or room is gone ends, saying
// why.
const tabs = new BroadcastChannel("chat-session");
tabs.onmessage = ({ data }) => {
  if (!session) return;
  if (data.nick !== session.nick) {
    end(session, `you joined as ${data.nick} in another tab or window: in this browser you are ${data.nick} now`);
  } else if (data.left === session.room) {
    end(session, `you left #${data.left} in another tab or window`);
  }
};

function connection() {
  if (!hub) {
    hub = new Hub("/hub/", forced ? { transports: [forced] } : {});
    hub.addEventListener("state", (e) => showState(e.detail));
    showState({ state: hub.state, transport: hub.transport });
  }
  return hub;
}

function showState({ state, transport }) {
  const badge = $("state");
  badge.hidden = false;
  badge.dataset.state = state;
  badge.dataset.transport = transport ?? "";
  badge.textContent = state;
  badge.title = transport ? `${state}, by ${transport}` : state;
}

function form(fields) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) body.set(k, v);
  return body;
}

// failure turns an error answer into an Error with the server's reason
// and its status.
async function failure(resp) {
  const err = new Error((await resp.text()).trim() || resp.statusText);
  err.status = resp.status;
  return err;
}

function append(li) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// timeOf shows when an event happened, in the reader's time zone.
function timeOf(iso) {
  const t = document.createElement("time");
  const d = new Date(iso);
  t.dateTime = d.toISOString();
  t.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  t.title = d.toLocaleString();
  return t;
}

function show(ev) {
  const li = document.createElement("li");
  li.append(timeOf(ev.time));
  if (ev.type === "message") {
    const nick = document.createElement("span");
    nick.className = "nick";
    nick.textContent = ev.nick;
    const text = document.createElement("span");
    text.textContent = ev.text;
    li.append(nick, text);
  } else {
    li.className = "notice";
    li.append(ev.nick + (ev.type === "join" ? " joined" : " left"));
  }
  append(li);
}

// deliver shows an event of the room as it comes, and applies a join or a
// leave to the member list: no need to ask the server for it again.
function deliver(s, frame) {
  let ev;
  try {
    ev = JSON.parse(frame.data);
  } catch {
    return; // not one of the chat's events
  }
  show(ev);
  if (ev.type === "message") return;
  change(s.members, ev);
  s.changes.push(ev);
  s.changed++;
  if (s.changes.length > 1000) s.changes.shift();
  showMembers(s);
}

function change(members, ev) {
  if (ev.type === "join") members.add(ev.nick);
  if (ev.type === "leave") members.delete(ev.nick);
}

// takeMembers takes a member list from the server, asked for when
// s.changed was mark: the joins and leaves that came since then are
// applied to it again, as it may be older than they are.
function takeMembers(s, members, mark) {
  s.members = new Set(members);
  const since = s.changed - mark;
  if (since <= s.changes.length) {
    for (const ev of s.changes.slice(s.changes.length - since)) change(s.members, ev);
  }
  showMembers(s);
}

// missed marks where events may be missing, takes the member list afresh,
// since joins and leaves may be among them, and says we are here at once:
// a restart may have forgotten us.
function missed(s) {
  const li = document.createElement("li");
  li.className = "notice missed";
  li.textContent = "you may have missed messages";
  append(li);
  refreshMembers(s);
  renew(s);
}

function showMembers(s) {
  $("members").replaceChildren(...[...s.members].sort().map((m) => {
    const li = document.createElement("li");
    li.textContent = m;
    return li;
  }));
}

async function refreshMembers(s) {
  const mark = s.changed;
  try {
    const resp = await fetch(`/rooms/${s.room}/members`);
    if (resp.ok && !s.stopped) takeMembers(s, await resp.json(), mark);
  } catch {
    // the next join or leave updates it
  }
}

// renew tells the server we are still here; if it no longer counts us
// present, or no longer knows our session, we join again.
async function renew(s) {
  let resp;
  try {
    resp = await fetch(`/rooms/${s.room}/here`, { method: "POST" });
  } catch {
    return; // unreachable: the connection's state says so, and the next renewal tries again
  }
  if (!s.stopped && (resp.status === 401 || resp.status === 410)) await rejoin(s).catch((err) => showError(err.message));
}

// rejoin joins the room again with our nick, once however many ask at
// the same time; the subscription goes on from its cursor, so nothing is
// skipped. The hub read our session when it connected: it connects again.
// A nick someone else has taken meanwhile ends the session.
function rejoin(s) {
  s.rejoining ??= (async () => {
    const mark = s.changed;
    try {
      const resp = await fetch(`/rooms/${s.room}/join`, { method: "POST", body: form({ nick: s.nick }) });
      if (s.stopped) return;
      if (resp.status === 409) {
        end(s, (await failure(resp)).message);
        return;
      }
      if (!resp.ok) throw await failure(resp);
      takeMembers(s, (await resp.json()).members, mark);
      showError("");
      hub.reconnect();
    } finally {
      s.rejoining = null;
    }
  })();
  return s.rejoining;
}

function showError(text) {
  $("chat-error").textContent = text;
}

async function join(room, nick) {
  $("join-error").textContent = "";
  let resp;
  try {
    resp = await fetch(`/rooms/${encodeURIComponent(room)}/join`, { method: "POST", body: form({ nick }) });
  } catch {
    $("join-error").textContent = "cannot reach the server";
    return;
  }
  if (!resp.ok) {
    sessionStorage.removeItem(stored.room);
    $("join-error").textContent = (await failure(resp)).message;
    return;
  }
  const joined = await resp.json();
  const before = localStorage.getItem(stored.nick);
  localStorage.setItem(stored.nick, joined.nick);
  tabs.postMessage({ nick: joined.nick });
  connection();
  // The connection may be older than this session (another tab's, with
  // the nick we had): the hub reads the session when it connects.
  if (before !== null && before !== joined.nick) hub.reconnect();
  start(room, joined);
}

// start shows the room and follows its topic from just after its history.
function start(room, joined) {
  if (session) end(session, "");
  sessionStorage.setItem(stored.room, room);
  const s = {
    room, nick: joined.nick, topic: joined.topic, members: new Set(joined.members), changes: [], changed: 0,
    rejoining: null, stopped: false,
  };
  session = s;
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-title").textContent = `#${room} as ${joined.nick}`;
  $("messages").replaceChildren();
  showError("");
  showSendError(null);
  joined.history.forEach(show);
  showMembers(s);
  s.sub = hub.subscribe(s.topic, joined.cursor);
  s.sub.addEventListener("message", (e) => deliver(s, e.detail));
  s.sub.addEventListener("missed", () => missed(s));
  s.sub.addEventListener("error", (e) => showError(e.detail.message));
  s.renewal = setInterval(() => renew(s), joined.renew_ms);
}

// publish posts text to the room. A refusal as forbidden means the hub
// does not count us present (a restart, a long sleep): join again, then
// post once more.
async function publish(s, text) {
  try {
    return await hub.publish(s.topic, text);
  } catch (err) {
    if (err.code !== "forbidden" || s.stopped) throw err;
    await rejoin(s);
    return await hub.publish(s.topic, text);
  }
}

async function send(e) {
  e.preventDefault();
  const s = session;
  const input = e.target.elements.text;
  const text = input.value;
  if (!s || !text.trim()) return;
  input.value = ""; // at once: what is typed from now on is the next message
  try {
    await publish(s, text);
    showSendError(null);
  } catch (err) {
    if (!input.value) input.value = text; // not sent: back in the box, unless something else is there
    showSendError(err);
  }
}

let sendErrorTimer;
let rateLimitedUntil = 0;

// showSendError shows why a message was not sent; a rate limit's notice
// goes when the limit has passed (not when an earlier message's ack comes
// in after it: acks of messages sent together arrive in any order),
// others when a message is sent.
function showSendError(err) {
  const box = $("send-error");
  if (!err) {
    if (Date.now() >= rateLimitedUntil) box.textContent = "";
    return;
  }
  clearTimeout(sendErrorTimer);
  rateLimitedUntil = 0;
  if (err.code === "rate_limited" && err.retryMs) {
    box.textContent = `too fast: wait ${Math.ceil(err.retryMs / 1000)} s`;
    rateLimitedUntil = Date.now() + err.retryMs;
    sendErrorTimer = setTimeout(() => (box.textContent = ""), err.retryMs);
    return;
  }
  box.textContent = err.code === "unavailable" ? "no answer from the server: your message may not have been sent" : err.message;
}

// end stops following the room and shows the join form, with why.
function end(s, reason) {
  s.stopped = true;
  clearInterval(s.renewal);
  s.sub?.unsubscribe();
  if (session === s) session = null;
  sessionStorage.removeItem(stored.room);
  $("chat").hidden = true;
  $("join").hidden = false;
  $("join-error").textContent = reason;
}

function leave() {
  const s = session;
  if (!s) return;
  fetch(`/rooms/${s.room}/leave`, { method: "POST", keepalive: true }).catch(() => {});
  tabs.postMessage({ nick: s.nick, left: s.room });
  end(s, "");
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target.elements;
  join(f.room.value.trim(), f.nick.value.trim());
});
$("send").addEventListener("submit", send);
$("leave").addEventListener("click", leave);

// A reload (or a tab restored) comes back to its room as the same nick.
{
  const f = $("join").elements;
  const nick = localStorage.getItem(stored.nick);
  const room = sessionStorage.getItem(stored.room);
  if (nick) f.nick.value = nick;
  if (room) f.room.value = room;
  if (nick && room) join(room, nick);
}
