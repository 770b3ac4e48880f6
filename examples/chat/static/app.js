"use strict";
// The chat page: join a room, then receive its events by long-poll or by
// an event stream, from the cursor of the last event seen, after any
// break. When the server says some events may be missing (it restarted,
// or we were away longer than the room keeps), the page says so and
// carries on from where the server stands. Who we are is the session
// cookie join sets; when the server no longer knows it, the page joins
// again. Everything shown is set with textContent, never parsed as HTML.

const $ = (id) => document.getElementById(id);
const POLL_TIMEOUT_MS = 25000; // proxies commonly cut requests at 30 s

// session: {room, nick, transport, cursor, members, stream, controller, stopped}
let session = null;

// One browser is one session, with one nick: joining in another tab or
// window of this browser changes it. Tabs tell each other, and a tab whose
// nick is no longer the session's ends, saying why.
const tabs = new BroadcastChannel("chat-session");
tabs.onmessage = (e) => {
  if (session && e.data.nick !== session.nick) {
    end(session, `you joined as ${e.data.nick} in another tab or window: in this browser you are ${e.data.nick} now`);
  }
};

function setState(state) {
  $("state").dataset.state = state;
  $("state").textContent = state;
}

function showError(text) {
  $("chat-error").textContent = text;
}

// backoff is the pause before retry number attempt, with jitter, so that a
// restarted server is not hit by everyone at once; at least what the
// server asked for with Retry-After.
function backoff(attempt, retryAfterSeconds = 0) {
  const base = Math.min(30000, 500 * 2 ** attempt);
  return Math.max(base / 2 + Math.random() * base, retryAfterSeconds * 1000);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function form(fields) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) body.set(k, v);
  return body;
}

// failure turns an error answer into an Error with the server's reason,
// its status and its Retry-After.
async function failure(resp) {
  const err = new Error((await resp.text()).trim() || resp.statusText);
  err.status = resp.status;
  err.retryAfter = Number(resp.headers.get("Retry-After")) || 0;
  return err;
}

function append(li) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function show(ev) {
  const li = document.createElement("li");
  if (ev.type === "message") {
    const nick = document.createElement("span");
    nick.className = "nick";
    nick.textContent = ev.nick;
    const text = document.createElement("span");
    text.textContent = ev.text;
    li.append(nick, text);
  } else {
    li.className = "notice";
    li.textContent = ev.nick + (ev.type === "join" ? " joined" : " left");
  }
  append(li);
}

// deliver shows events as they come, and applies the joins and leaves to
// the member list: no need to ask the server for it again.
function deliver(s, events) {
  for (const ev of events) {
    show(ev);
    if (ev.type === "join") s.members.add(ev.nick);
    if (ev.type === "leave") s.members.delete(ev.nick);
  }
  if (events.some((ev) => ev.type !== "message")) showMembers(s);
}

// missed marks where events may be missing, and takes the member list
// afresh, since joins and leaves may be among them.
function missed(s) {
  const li = document.createElement("li");
  li.className = "notice missed";
  li.textContent = "you may have missed messages";
  append(li);
  refreshMembers(s);
}

function showMembers(s) {
  $("members").replaceChildren(...[...s.members].sort().map((m) => {
    const li = document.createElement("li");
    li.textContent = m;
    return li;
  }));
}

async function refreshMembers(s) {
  try {
    const resp = await fetch(`/rooms/${s.room}/members`);
    if (resp.ok && !s.stopped) {
      s.members = new Set(await resp.json());
      showMembers(s);
    }
  } catch (_) { /* the next join or leave updates it */ }
}

// rejoin joins the room again with our nick, for a server that no longer
// knows our session; our cursor stays, so nothing is skipped. A nick
// someone else has taken meanwhile ends the session.
async function rejoin(s) {
  const resp = await fetch(`/rooms/${s.room}/join`, { method: "POST", body: form({ nick: s.nick }) });
  if (resp.status === 409) {
    end(s, (await failure(resp)).message);
    return;
  }
  if (!resp.ok) throw await failure(resp);
  const joined = await resp.json();
  s.members = new Set(joined.members);
  showMembers(s);
}

function subscribeURL(s, transport) {
  const q = new URLSearchParams({ transport, since: s.cursor });
  return `/rooms/${s.room}/subscribe?${q}`;
}

async function longPoll(s) {
  let attempt = 0, rejoined = false;
  while (!s.stopped) {
    s.controller = new AbortController();
    const timer = setTimeout(() => s.controller.abort(), POLL_TIMEOUT_MS);
    try {
      const resp = await fetch(subscribeURL(s, "longpoll"), { signal: s.controller.signal });
      if (resp.status === 401 && !rejoined) { // once: a session refused again is an error
        await rejoin(s);
        rejoined = true;
        continue;
      }
      if (!resp.ok) throw await failure(resp);
      rejoined = false;
      const answer = await resp.json();
      if (s.stopped) return;
      if (!answer.complete) missed(s);
      deliver(s, answer.events);
      s.cursor = answer.next;
      setState("connected");
      showError("");
      attempt = 0;
    } catch (err) {
      if (s.stopped) return;
      if (err.name !== "AbortError") {
        setState("reconnecting");
        showError(err.message);
        await sleep(backoff(attempt++, err.retryAfter));
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

function eventStream(s, attempt = 0) {
  if (s.stopped) return;
  const es = new EventSource(subscribeURL(s, "sse"));
  s.stream = es;
  const onEvent = (e) => {
    s.cursor = e.lastEventId;
    deliver(s, [JSON.parse(e.data)]);
  };
  for (const type of ["message", "join", "leave"]) es.addEventListener(type, onEvent);
  es.addEventListener("missed", (e) => {
    s.cursor = e.data; // where the server stands; events that follow carry their own
    missed(s);
  });
  es.onopen = () => {
    setState("connected");
    showError("");
    attempt = 0;
  };
  es.onerror = () => {
    if (s.stopped) return;
    setState("reconnecting");
    if (es.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
    // The server answered with an error (it forgot our session, cannot
    // hold the room now, or is overloaded).
    retryStream(s, attempt);
  };
}

// retryStream waits, joins again (which says what is wrong, if anything
// still is) and reconnects from our cursor.
function retryStream(s, attempt, retryAfter = 0) {
  setTimeout(async () => {
    if (s.stopped) return;
    try {
      await rejoin(s);
      eventStream(s, attempt + 1);
    } catch (err) {
      if (s.stopped) return;
      showError(err.message);
      retryStream(s, attempt + 1, err.retryAfter);
    }
  }, backoff(attempt, retryAfter));
}

async function join(e) {
  e.preventDefault();
  const f = e.target.elements;
  $("join-error").textContent = "";
  const room = f.room.value.trim(), nick = f.nick.value.trim();
  let resp;
  try {
    resp = await fetch(`/rooms/${encodeURIComponent(room)}/join`, { method: "POST", body: form({ nick }) });
  } catch (err) {
    $("join-error").textContent = "cannot reach the server";
    return;
  }
  if (!resp.ok) {
    $("join-error").textContent = (await failure(resp)).message;
    return;
  }
  const joined = await resp.json();
  tabs.postMessage({ nick: joined.nick });
  session = {
    room, nick: joined.nick, transport: f.transport.value, cursor: joined.cursor,
    members: new Set(joined.members), stopped: false,
  };
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-title").textContent = `#${room} as ${joined.nick}`;
  $("messages").replaceChildren();
  showError("");
  joined.history.forEach(show);
  showMembers(session);
  if (session.transport === "sse") eventStream(session);
  else longPoll(session);
}

async function send(e) {
  e.preventDefault();
  const s = session, input = e.target.elements.text;
  $("send-error").textContent = "";
  const post = () => fetch(`/rooms/${s.room}/messages`, { method: "POST", body: form({ text: input.value }) });
  try {
    let resp = await post();
    if (resp.status === 401) {
      await rejoin(s);
      resp = await post();
    }
    if (!resp.ok) throw await failure(resp);
    input.value = "";
  } catch (err) {
    $("send-error").textContent = err.status ? err.message : "not sent: the server is unreachable";
  }
}

// end stops the session's transport and shows the join form, with why.
function end(s, reason) {
  s.stopped = true;
  s.controller?.abort();
  s.stream?.close();
  if (session === s) session = null;
  setState("offline");
  $("chat").hidden = true;
  $("join").hidden = false;
  $("join-error").textContent = reason;
}

function leave() {
  if (!session) return;
  navigator.sendBeacon(`/rooms/${session.room}/leave`);
  end(session, "");
}

$("join").addEventListener("submit", join);
$("send").addEventListener("submit", send);
$("leave").addEventListener("click", leave);
window.addEventListener("pagehide", leave);
