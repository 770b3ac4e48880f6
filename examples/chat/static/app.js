"use strict";
// The chat page: join a room, then receive its events by long-poll or by
// an event stream, catching up from the last seq seen after any break.
// Everything shown is set with textContent, never parsed as HTML.

const $ = (id) => document.getElementById(id);
const POLL_TIMEOUT_MS = 25000; // proxies commonly cut requests at 30 s

let session = null; // {room, nick, transport, cursor, stream, controller, stopped}

function setState(state) {
  $("state").dataset.state = state;
  $("state").textContent = state;
}

function backoff(attempt) {
  const base = Math.min(30000, 500 * 2 ** attempt);
  return base / 2 + Math.random() * base; // jitter: the restarted server is not hit by everyone at once
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function form(fields) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) body.set(k, v);
  return body;
}

async function errorText(resp) {
  return (await resp.text()).trim() || resp.statusText;
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
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function deliver(events) {
  let membersChanged = false;
  for (const ev of events) {
    session.cursor = ev.seq;
    show(ev);
    if (ev.type !== "message") membersChanged = true;
  }
  if (membersChanged) refreshMembers();
}

function showMembers(members) {
  const ul = $("members");
  ul.replaceChildren(...members.map((m) => {
    const li = document.createElement("li");
    li.textContent = m;
    return li;
  }));
}

async function refreshMembers() {
  try {
    const resp = await fetch(`/rooms/${session.room}/members`);
    if (resp.ok) showMembers(await resp.json());
  } catch (_) { /* the next join or leave refreshes it */ }
}

function subscribeURL(transport) {
  const q = new URLSearchParams({ transport, since: session.cursor, nick: session.nick });
  return `/rooms/${session.room}/subscribe?${q}`;
}

async function longPoll(s) {
  let attempt = 0;
  while (!s.stopped) {
    s.controller = new AbortController();
    const timer = setTimeout(() => s.controller.abort(), POLL_TIMEOUT_MS);
    try {
      const resp = await fetch(subscribeURL("longpoll"), { signal: s.controller.signal });
      if (!resp.ok) throw new Error(await errorText(resp));
      deliver(await resp.json());
      setState("connected");
      attempt = 0;
    } catch (err) {
      if (s.stopped) return;
      if (err.name !== "AbortError") {
        setState("reconnecting");
        await sleep(backoff(attempt++));
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

function eventStream(s, attempt = 0) {
  if (s.stopped) return;
  const es = new EventSource(subscribeURL("sse"));
  s.stream = es;
  const onEvent = (e) => deliver([JSON.parse(e.data)]);
  for (const type of ["message", "join", "leave"]) es.addEventListener(type, onEvent);
  es.onopen = () => { setState("connected"); attempt = 0; };
  es.onerror = () => {
    if (s.stopped) return;
    setState("reconnecting");
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (the server answered with an error): start
      // again from our cursor after a jittered pause.
      setTimeout(() => eventStream(s, attempt + 1), backoff(attempt));
    }
  };
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
    $("join-error").textContent = await errorText(resp);
    return;
  }
  const joined = await resp.json();
  session = { room, nick, transport: f.transport.value, cursor: 0, stopped: false };
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-title").textContent = `#${room} as ${nick}`;
  $("messages").replaceChildren();
  deliver(joined.history);
  session.cursor = joined.cursor;
  showMembers(joined.members);
  if (session.transport === "sse") eventStream(session);
  else longPoll(session);
}

async function send(e) {
  e.preventDefault();
  const input = e.target.elements.text;
  $("send-error").textContent = "";
  try {
    const resp = await fetch(`/rooms/${session.room}/messages`, {
      method: "POST", body: form({ nick: session.nick, text: input.value }),
    });
    if (!resp.ok) {
      $("send-error").textContent = await errorText(resp);
      return;
    }
    input.value = "";
  } catch (_) {
    $("send-error").textContent = "not sent: the server is unreachable";
  }
}

function leave() {
  if (!session) return;
  session.stopped = true;
  session.controller?.abort();
  session.stream?.close();
  navigator.sendBeacon(`/rooms/${session.room}/leave`, form({ nick: session.nick }));
  session = null;
  setState("offline");
  $("chat").hidden = true;
  $("join").hidden = false;
}

$("join").addEventListener("submit", join);
$("send").addEventListener("submit", send);
$("leave").addEventListener("click", leave);
window.addEventListener("pagehide", leave);
