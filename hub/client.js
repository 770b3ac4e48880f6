// The hub's JavaScript client: one ES module, no build step, served by the
// hub at /hub/client.js. It speaks the wire format of docs/hub.md over a
// WebSocket, an event stream (SSE) or long-polling, whichever works:
//
//   import { Hub } from "/hub/client.js";
//   const hub = new Hub("/hub/");
//   hub.addEventListener("state", (e) => badge(e.detail.state)); // connecting, connected, reconnecting, offline
//   const room = hub.subscribe("room:lobby", cursorFromTheServer); // "" (or nothing): from now; "0": from the start
//   room.addEventListener("message", (e) => show(e.detail.data));  // a message frame: topic, epoch, seq, time, data, cursor
//   room.addEventListener("missed", () => warn("you may have missed messages"));
//   await hub.publish("room:lobby", "hello");                      // resolves with the ack, or rejects with a HubError
//
// What it does for the page:
//
//   - Transports are tried in the order of options.transports (default
//     WebSocket, then SSE, then long-polling) until one works; that one is
//     then kept. options.transports: ["longpoll"] forces one.
//   - Each topic's cursor is kept across reconnections, so that after any
//     break the page gets every message it lacks, once, in order, or a
//     "missed" event when the hub's history no longer reaches its cursor.
//   - Reconnecting waits a full-jitter exponential back-off (a random time
//     up to 500 ms, 1 s, 2 s … 20 s), at least the retry_ms the hub asked
//     for; after a close code or status that says retrying as before is
//     useless (4400-4499, 400, 403) it stops, in state "offline".
//   - The state is "connected" as soon as the transport is up: the
//     WebSocket or the event stream opened, the first long-poll (which
//     carries a ping, so the hub answers it at once) answered.
//   - One connection serves every topic, and, in browsers that have
//     SharedWorker, every tab of the origin: a shared worker running this
//     module holds it, and tabs talk to it through ports. Over HTTP/1.1 a
//     browser opens six connections per host at most; a stream or a
//     long-poll per tab would leave the seventh tab without any.
//
// In Node, pass the implementations the platform lacks: new Hub(url,
// { WebSocket, EventSource, fetch }) with the ws and eventsource packages
// and Node's own fetch. A hub given implementations is never shared.

export const VERSION = 1;
export const SUBPROTOCOL = "cometkit-hub.v1";
export const TRANSPORTS = Object.freeze(["websocket", "sse", "longpoll"]);

// MAX_GET_URL is the longest long-poll URL sent as a GET: nginx refuses a
// request line beyond its 8 KB header buffers, and some proxies less.
const MAX_GET_URL = 4000;

const DEFAULTS = Object.freeze({
  transports: TRANSPORTS,
  backoff: { base: 500, max: 20000 },
  pingInterval: 25000, // the hub's WithPingInterval: silence for twice that is a dead connection
  pollTimeout: 25000, // the hub's WithPollTimeout: a long-poll longer than twice that is stuck
  publishTimeout: 10000, // how long a publish may wait for a connection and its ack
});

// Error codes after which a topic is no longer followed (docs/hub.md).
const TOPIC_ENDED = new Set(["forbidden", "too_many_topics", "bad_request"]);

// A HubError is a refusal from the hub (an error frame: code, message,
// retry_ms), or the client's own "unavailable" when there was no answer.
export class HubError extends Error {
  constructor(frame) {
    super(frame.message || frame.code);
    this.name = "HubError";
    this.code = frame.code;
    this.retryMs = frame.retry_ms;
    this.topic = frame.topic;
    this.frame = frame;
  }
}

// A Subscription is one topic a Hub follows. It fires "subscribed",
// "message", "missed" and "error" for its topic; cursor is where the page
// is in it, which the Hub resumes from after any break.
export class Subscription extends EventTarget {
  #hub;
  constructor(hub, topic, cursor) {
    super();
    this.#hub = hub;
    this.topic = topic;
    this.cursor = cursor;
    this.active = true;
  }

  unsubscribe() {
    if (this.active) this.#hub.unsubscribe(this.topic);
  }
}

// A Hub is the page's connection to the hub. It is an EventTarget: "state"
// (detail: state, transport, and why it changed: reason, and the hub's
// error code, a WebSocket's closeCode or an HTTP status; final when the
// client has stopped trying; retryIn, the back-off), "subscribed", "message",
// "missed" (detail: the frame) for every topic, and "error" (detail: a
// HubError) for refusals that no publish promise reports.
export class Hub extends EventTarget {
  #url;
  #options;
  #subs = new Map(); // topic → Subscription
  #pending = new Map(); // publish id → { resolve, reject, timer }
  #nextID = 1;
  #link; // { send(op), close() }
  #closed = false;

  // url: the hub's endpoint (a path is taken from the page's location).
  // options: see DEFAULTS, plus shared (default true), WebSocket,
  // EventSource and fetch.
  constructor(url = "/hub/", options = {}) {
    super();
    if (options.transports !== undefined) checkTransports(options.transports);
    this.#url = new URL(url, globalThis.location?.href).toString();
    this.#options = options;
    this.state = "connecting";
    this.transport = null;
    this.shared = false; // whether the connection is the tabs' shared one
    this.#link = this.#connect();
    if (typeof globalThis.addEventListener === "function" && globalThis.document) {
      // A page kept in the back/forward cache leaves the shared connection
      // while hidden, and comes back to it from its cursors.
      globalThis.addEventListener("pagehide", () => this.#link.close());
      globalThis.addEventListener("pageshow", (e) => {
        if (e.persisted && !this.#closed) this.#relink();
      });
    }
  }

  // subscribe follows topic from cursor ("" or none: from now; "0": from
  // the start of the hub's history; else a cursor the hub gave). A topic
  // followed already starts again from the cursor given.
  subscribe(topic, cursor = "") {
    let sub = this.#subs.get(topic);
    if (!sub) {
      sub = new Subscription(this, topic, cursor);
      this.#subs.set(topic, sub);
    } else if (cursor) {
      sub.cursor = cursor;
    }
    this.#link.send({ op: "subscribe", topic, cursor: sub.cursor });
    return sub;
  }

  unsubscribe(topic) {
    const sub = this.#subs.get(topic);
    if (!sub) return;
    sub.active = false;
    this.#subs.delete(topic);
    this.#link.send({ op: "unsubscribe", topic });
  }

  // publish sends data (a string, or bytes: an ArrayBuffer or a typed
  // array) to topic, when the hub allows this client to. It resolves with
  // the hub's ack ({type: "published", topic, cursor}) and rejects with a
  // HubError: the hub's refusal (forbidden, rate_limited with retryMs,
  // rejected, …) or "unavailable" when no answer came in time.
  publish(topic, data) {
    const id = this.#nextID++;
    const frame = { op: "publish", id, topic, ...encode(data) };
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new HubError({ code: "unavailable", message: "the hub client is closed", topic, id }));
        return;
      }
      // The connection times the publish out; this is for a shared worker
      // that died with it.
      const timer = setTimeout(() => this.#ack({ id, frame: { type: "error", code: "unavailable", message: "no answer from the hub", topic, id } }),
        (this.#options.publishTimeout ?? DEFAULTS.publishTimeout) + 5000);
      this.#pending.set(id, { resolve, reject, timer });
      this.#link.send(frame);
    });
  }

  // reconnect drops the connection and makes a new one at once, resuming
  // every topic from its cursor: after the credentials the hub authorizes
  // the connection with (a cookie) changed, say, or after a refusal that
  // left the state "offline".
  reconnect() {
    this.#link.send({ op: "reconnect" });
  }

  // close leaves the hub: the connection closes (for a shared connection,
  // once no tab uses it), and pending publishes are rejected.
  close() {
    this.#closed = true;
    this.#link.close();
    this.#link = { send() {}, close() {} };
    for (const sub of this.#subs.values()) sub.active = false;
    this.#subs.clear();
    for (const id of [...this.#pending.keys()]) {
      this.#ack({ id, frame: { type: "error", code: "unavailable", message: "the hub client is closed", id } });
    }
    this.#receive({ kind: "state", state: "offline", transport: null, reason: "closed" });
  }

  // #connect links the page to a connection: the tabs' shared worker if
  // the browser has one and the options allow it, else one of its own.
  #connect() {
    const o = this.#options;
    const own = o.WebSocket || o.EventSource || o.fetch;
    if (o.shared !== false && !own && typeof globalThis.SharedWorker === "function" && globalThis.document) {
      try {
        const link = this.#shared();
        this.shared = true;
        return link;
      } catch {
        // Not allowed here (another origin's script, a policy): a connection of its own.
      }
    }
    return this.#local();
  }

  #local() {
    this.shared = false;
    const conn = new Connection(this.#url, this.#options);
    const sink = { post: (m) => queueMicrotask(() => this.#receive(m)) };
    conn.attach(sink);
    return { send: (op) => conn.handle(sink, op), close: () => conn.detach(sink) };
  }

  #shared() {
    const options = shareable(this.#options);
    const name = `cometkit-hub v${VERSION} ${JSON.stringify([this.#url, options])}`;
    const worker = new SharedWorker(import.meta.url, { type: "module", name });
    const port = worker.port;
    let heard = false;
    let link = null;
    let fallback = null; // the local link, when the worker could not start
    port.onmessage = (e) => {
      heard = true;
      this.#receive(e.data);
    };
    worker.onerror = () => {
      if (heard || fallback || this.#link !== link) return;
      // The worker did not start: the page gets a connection of its own,
      // and follows its topics again from their cursors.
      fallback = this.#local();
      this.#link = fallback;
      this.shared = false;
      this.#resubscribe();
    };
    port.postMessage({ op: "hello", url: this.#url, options });
    // The worker learns that the tab is gone when the tab's lock is
    // released, which happens however the tab ends.
    const locks = globalThis.navigator?.locks;
    if (locks) {
      const lock = `cometkit-hub tab ${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
      locks.request(lock, () => {
        port.postMessage({ op: "lock", name: lock });
        return new Promise(() => {}); // held as long as the tab lives
      });
    }
    link = {
      send: (op) => (fallback ? fallback.send(op) : port.postMessage(op)),
      close: () => {
        if (fallback) {
          fallback.close();
        } else {
          port.postMessage({ op: "close" });
          port.close();
        }
      },
    };
    return link;
  }

  #relink() {
    this.#link = this.#connect();
    this.#resubscribe();
  }

  #resubscribe() {
    for (const sub of this.#subs.values()) this.#link.send({ op: "subscribe", topic: sub.topic, cursor: sub.cursor });
  }

  #receive(m) {
    switch (m.kind) {
      case "state": {
        const { kind, ...detail } = m;
        this.state = m.state;
        this.transport = m.transport ?? null;
        this.dispatchEvent(new CustomEvent("state", { detail }));
        break;
      }
      case "ack":
        this.#ack(m);
        break;
      case "frame":
        this.#frame(m.frame);
        break;
    }
  }

  #ack({ id, frame }) {
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if (frame.type === "published") p.resolve(frame);
    else p.reject(new HubError(frame));
  }

  #frame(f) {
    const sub = f.topic === undefined ? undefined : this.#subs.get(f.topic);
    if (f.type === "error") {
      const err = new HubError(f);
      if (sub && TOPIC_ENDED.has(f.code)) {
        sub.active = false;
        this.#subs.delete(f.topic);
      }
      sub?.dispatchEvent(new CustomEvent("error", { detail: err }));
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
      return;
    }
    if (f.topic !== undefined && !sub) return; // a topic this page has left
    if (sub && f.cursor) sub.cursor = f.cursor;
    sub?.dispatchEvent(new CustomEvent(f.type, { detail: f }));
    this.dispatchEvent(new CustomEvent(f.type, { detail: f }));
  }
}

function checkTransports(list) {
  for (const t of list) {
    if (!TRANSPORTS.includes(t)) throw new TypeError(`Hub: unknown transport ${JSON.stringify(t)}: use ${TRANSPORTS.join(", ")}`);
  }
}

// encode makes a publish's data fields: a string as it is, bytes as base64.
function encode(data) {
  if (typeof data === "string") return { data };
  let bytes;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else throw new TypeError("Hub.publish: data is a string, an ArrayBuffer or a typed array");
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return { data: btoa(s), encoding: "base64" };
}

// shareable is the part of the options a shared worker can be given.
function shareable(o) {
  const out = {};
  for (const k of ["transports", "backoff", "pingInterval", "pollTimeout", "publishTimeout"]) {
    if (o[k] !== undefined) out[k] = o[k];
  }
  return out;
}

// Positions. Tabs that share a connection may follow one topic from
// different cursors (one joined a moment after the other), so the
// connection needs to put cursors in order, which a page never does: it
// reads them as this hub makes them, "epoch-seq" ("0" is the start of any
// epoch), and nowhere else.
function position(cursor) {
  if (!cursor) return null;
  if (cursor === "0") return { epoch: null, seq: 0 };
  const dash = cursor.lastIndexOf("-");
  return { epoch: dash < 0 ? "" : cursor.slice(0, dash), seq: Number(cursor.slice(dash + 1)) };
}

const sameEpoch = (p, q) => p.epoch === null || q.epoch === null || p.epoch === q.epoch;

// covers reports whether a reader at p has had everything up to q.
const covers = (p, q) => sameEpoch(p, q) && q.seq <= p.seq;

const cursorAt = (epoch, seq) => (epoch ? `${epoch}-${seq}` : String(seq));

const missedFrame = (topic, cursor) => ({ type: "missed", topic, cursor });

// A Connection is one connection to the hub, whichever transport carries
// it, and the sinks it serves: one page of its own, or, in a shared
// worker, every tab's port. Sinks send it ops ({op: "subscribe", topic,
// cursor}, "unsubscribe", "publish", "reconnect") and receive
// {kind: "state"}, {kind: "frame", frame} and {kind: "ack", id, frame}.
class Connection {
  constructor(url, options) {
    // An option given as undefined is an option not given.
    const o = { ...DEFAULTS, backoff: { ...DEFAULTS.backoff } };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = k === "backoff" ? { ...o.backoff, ...v } : v;
    this.url = url;
    const ws = new URL(url);
    ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
    this.wsURL = ws.toString();
    this.impl = {
      WebSocket: o.WebSocket ?? globalThis.WebSocket,
      EventSource: o.EventSource ?? globalThis.EventSource,
      fetch: o.fetch ?? globalThis.fetch?.bind(globalThis),
    };
    checkTransports(o.transports);
    const needs = { websocket: "WebSocket", sse: "EventSource", longpoll: "fetch" };
    // SSE needs fetch too: publishes, and asking why a stream was refused.
    this.transports = o.transports.filter((t) => this.impl[needs[t]] && (t !== "sse" || this.impl.fetch));
    if (this.transports.length === 0) throw new TypeError(`Hub: none of the transports ${o.transports.join(", ")} is available here`);
    this.backoff = o.backoff;
    this.pingInterval = o.pingInterval;
    this.pollTimeout = o.pollTimeout;
    this.publishTimeout = o.publishTimeout;

    this.sinks = new Set();
    this.topics = new Map(); // topic → { cursor, sinks: Map<sink, { pos, announced }> }
    this.pending = new Map(); // wire id → { sink, id, frame, sent, timer }
    this.outbox = []; // publishes not sent yet
    this.nextID = 1;
    this.state = "offline";
    this.stopped = true;
    this.everConnected = false;
    this.transport = null;
    this.kept = null; // the transport that worked, once one has
    this.trying = 0; // the index in transports tried until then
    this.attempt = 0;
    this.timer = null;
    this.watchdog = null;
    this.lastHeard = 0;
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", () => {
        if (!this.stopped && !this.transport) this.connect();
      });
      globalThis.addEventListener("offline", () => {
        if (!this.stopped && this.transport) this.drop({ reason: "the browser is offline" });
      });
    }
  }

  attach(sink) {
    this.sinks.add(sink);
    if (this.stopped) this.start();
    else sink.post({ kind: "state", state: this.state, transport: this.transport?.name ?? null });
  }

  detach(sink) {
    if (!this.sinks.delete(sink)) return;
    for (const topic of [...this.topics.keys()]) this.leave(sink, topic);
    for (const [wire, p] of this.pending) {
      if (p.sink === sink) this.forget(wire);
    }
    if (this.sinks.size === 0) this.stop();
  }

  handle(sink, m) {
    if (!this.sinks.has(sink)) return; // detached: a closed page's last words
    switch (m.op) {
      case "subscribe":
        this.subscribe(sink, m.topic, m.cursor ?? "");
        break;
      case "unsubscribe":
        this.leave(sink, m.topic);
        break;
      case "publish":
        this.publish(sink, m);
        break;
      case "reconnect":
        this.reconnect();
        break;
    }
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  // stop closes the connection for good (until start): no sink needs it.
  stop() {
    this.stopped = true;
    this.closeTransport();
    clearTimeout(this.timer);
    this.failAll({ code: "unavailable", message: "the hub client is closed" });
    this.setState("offline", { reason: "closed" });
  }

  reconnect() {
    if (this.stopped) return;
    this.drop({ reason: "reconnecting" });
    this.attempt = 0;
    this.connect();
  }

  // drop ends the transport without waiting for it to fail.
  drop(info) {
    const t = this.transport;
    if (!t) return;
    t.close();
    this.lost(t, { ...info, proved: true, offline: globalThis.navigator?.onLine === false });
  }

  closeTransport() {
    this.transport?.close();
    this.transport = null;
    clearInterval(this.watchdog);
  }

  connect() {
    clearTimeout(this.timer);
    this.closeTransport();
    const name = this.kept ?? this.transports[this.trying];
    const Transport = { websocket: WebSocketTransport, sse: EventStreamTransport, longpoll: PollTransport }[name];
    this.transport = new Transport(this);
    this.setState(this.everConnected ? "reconnecting" : "connecting", { transport: name });
    this.transport.start();
  }

  // opened is the transport's word that it is up; proved, that it carried
  // an exchange, so that it is the one to keep.
  opened(t, proved) {
    if (t !== this.transport) return;
    if (proved && !this.kept) this.kept = t.name;
    this.attempt = 0;
    this.everConnected = true;
    this.lastHeard = Date.now();
    clearInterval(this.watchdog);
    if (t.name !== "longpoll") {
      // The hub pings every pingInterval: a connection silent for twice
      // that is dead, whatever the socket says. Looking four times an
      // interval notices it within a quarter interval of that, not up to
      // a whole one later.
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastHeard > 2 * this.pingInterval) this.drop({ reason: "no ping from the hub" });
      }, this.pingInterval / 4);
    }
    this.setState("connected", { transport: t.name });
    this.flush();
  }

  // lost is the transport's word that it ended. info says how: proved
  // (it had carried an exchange), tryNext (it never opened, for no reason
  // it can tell), useLongPoll (the hub answers long-polls but the stream
  // did not work), final (retrying as before is useless), longer (too many
  // connections), retryMs, and what the page is told: the hub's error code,
  // a WebSocket's closeCode, an HTTP status, a reason, the error frames.
  lost(t, info) {
    if (t !== this.transport) return;
    t.close(); // whatever of it is still under way
    this.transport = null;
    clearInterval(this.watchdog);
    for (const [wire, p] of this.pending) {
      if (p.sent && t.name === "websocket") {
        this.ack(wire, { type: "error", code: "unavailable", message: "the connection ended before the hub answered: the message may or may not have been published" });
      }
    }
    if (this.stopped) return;
    if (info.final) {
      this.receive(info.frames ?? []);
      const err = (info.frames ?? []).find((f) => f.type === "error" && f.topic === undefined);
      this.failAll(err ?? { code: "unavailable", message: info.reason || "the hub refused the connection" });
      this.setState("offline", { transport: t.name, final: true, code: info.code, closeCode: info.closeCode, status: info.status, reason: info.reason || err?.message });
      return;
    }
    if (!this.kept && !info.proved) {
      if (info.useLongPoll && this.transports.includes("longpoll")) {
        this.trying = this.transports.indexOf("longpoll");
        this.connect();
        return;
      }
      if (info.tryNext && this.trying + 1 < this.transports.length) {
        this.trying++;
        this.connect();
        return;
      }
      this.trying = 0; // unreachable or refused: the best one first again, after the back-off
    }
    const detail = { transport: t.name, code: info.code, closeCode: info.closeCode, status: info.status, reason: info.reason };
    if (info.offline) {
      this.setState("offline", detail); // until the browser's "online"
      return;
    }
    // Full jitter: a random wait up to the exponential bound, so that the
    // clients a restart disconnected do not all come back at once.
    const { base, max } = this.backoff;
    let delay = Math.random() * Math.min(max, base * 2 ** this.attempt++);
    if (info.longer) delay = max / 2 + (Math.random() * max) / 2;
    if (info.retryMs) delay = Math.max(delay, info.retryMs);
    this.setState(this.everConnected ? "reconnecting" : "connecting", { ...detail, retryIn: Math.round(delay) });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  setState(state, detail = {}) {
    this.state = state;
    for (const sink of this.sinks) sink.post({ kind: "state", state, transport: null, ...detail });
  }

  // followed lists the topics to follow and their cursors.
  followed() {
    return [...this.topics].map(([topic, t]) => [topic, t.cursor]);
  }

  subscribe(sink, topic, cursor) {
    if (this.topics.get(topic)?.sinks.has(sink)) this.leave(sink, topic);
    const want = position(cursor);
    const entry = { pos: want, announced: false };
    let t = this.topics.get(topic);
    if (!t) {
      t = { cursor, sinks: new Map([[sink, entry]]) };
      this.topics.set(topic, t);
      if (cursor) this.announce(sink, topic, entry, cursor);
      this.transport?.follow(topic, cursor);
      return;
    }
    t.sinks.set(sink, entry);
    const have = position(t.cursor);
    if (!cursor) {
      if (have) {
        entry.pos = have;
        this.announce(sink, topic, entry, t.cursor);
      }
      return;
    }
    this.announce(sink, topic, entry, cursor);
    if (have && sameEpoch(have, want) && want.seq >= have.seq) return; // ahead: it skips what it has
    // Behind the connection, or in another epoch: follow the topic again
    // from this cursor; the other sinks skip what they have had.
    t.cursor = cursor;
    this.transport?.follow(topic, cursor);
  }

  announce(sink, topic, entry, cursor) {
    entry.announced = true;
    sink.post({ kind: "frame", frame: { type: "subscribed", topic, cursor } });
  }

  leave(sink, topic) {
    const t = this.topics.get(topic);
    if (!t || !t.sinks.delete(sink) || t.sinks.size > 0) return;
    this.topics.delete(topic);
    this.transport?.unfollow(topic);
  }

  // receive takes frames from the transport.
  receive(frames) {
    this.lastHeard = Date.now();
    for (const f of frames) {
      switch (f.type) {
        case "subscribed":
        case "message":
        case "missed":
          this.relay(f);
          break;
        case "published":
          this.ack(f.id, f);
          break;
        case "error":
          if (f.id !== undefined && this.pending.has(f.id)) this.ack(f.id, f);
          else if (f.topic !== undefined) this.topicError(f);
          else for (const sink of this.sinks) sink.post({ kind: "frame", frame: f });
          break;
      }
    }
  }

  // relay gives a topic's frame to each sink following it, as that sink
  // needs it: what it has had already is left out, and a gap between its
  // position and the frame is a "missed".
  relay(f) {
    const t = this.topics.get(f.topic);
    if (!t) return; // unsubscribed meanwhile
    t.cursor = f.cursor;
    const at = f.type === "message" ? { epoch: f.epoch ?? "", seq: f.seq } : position(f.cursor);
    for (const [sink, e] of t.sinks) {
      const out = [];
      switch (f.type) {
        case "subscribed":
          if (!e.announced) {
            e.announced = true;
            e.pos ??= at;
            out.push(f);
          } else if (e.pos && at && !covers(e.pos, at)) {
            out.push(missedFrame(f.topic, f.cursor));
            e.pos = at;
          }
          break;
        case "missed":
          if (e.pos && at && covers(e.pos, at)) break;
          e.announced = true;
          e.pos = at;
          out.push(f);
          break;
        case "message":
          if (e.pos && covers(e.pos, at)) break;
          if (e.pos && (!sameEpoch(e.pos, at) || at.seq > e.pos.seq + 1)) out.push(missedFrame(f.topic, cursorAt(at.epoch, at.seq - 1)));
          e.announced = true;
          e.pos = at;
          out.push(f);
          break;
      }
      for (const frame of out) sink.post({ kind: "frame", frame });
    }
  }

  // topicError passes a refusal of one topic to its sinks. Forbidden, too
  // many topics or a bad cursor end the topic; unavailable (the hub could
  // not read its history) follows it again after a while.
  topicError(f) {
    const t = this.topics.get(f.topic);
    if (!t) return;
    for (const sink of t.sinks.keys()) sink.post({ kind: "frame", frame: f });
    if (TOPIC_ENDED.has(f.code)) {
      this.topics.delete(f.topic);
      return;
    }
    if (f.code === "unavailable" && this.transport?.name === "websocket") {
      const transport = this.transport;
      setTimeout(() => {
        if (this.transport === transport && this.topics.get(f.topic) === t) transport.follow(f.topic, t.cursor);
      }, f.retry_ms ?? this.backoff.base);
    }
  }

  publish(sink, m) {
    const wire = this.nextID++;
    const { id, op, ...fields } = m;
    const p = { sink, id, frame: { op: "publish", ...fields, id: wire }, sent: false };
    p.timer = setTimeout(() => {
      this.ack(wire, { type: "error", code: "unavailable", message: p.sent ? "no answer from the hub: the message may or may not have been published" : "not sent: no connection to the hub" });
    }, this.publishTimeout);
    this.pending.set(wire, p);
    this.outbox.push(p);
    if (this.state === "connected") this.flush();
  }

  // flush sends what waits to be published: on the WebSocket, or, with the
  // other transports, in one POST.
  flush() {
    const t = this.transport;
    if (!t || this.state !== "connected" || this.outbox.length === 0) return;
    const batch = this.outbox.filter((p) => this.pending.has(p.frame.id));
    this.outbox = [];
    if (t.name === "websocket") {
      for (const p of batch) {
        if (t.send(p.frame)) p.sent = true;
        else this.outbox.push(p);
      }
      return;
    }
    for (const p of batch) p.sent = true;
    this.postPublishes(batch);
  }

  async postPublishes(batch) {
    let answer;
    try {
      answer = await this.post(batch.map((p) => p.frame), AbortSignal.timeout(this.publishTimeout));
    } catch {
      for (const p of batch) this.ack(p.frame.id, { type: "error", code: "unavailable", message: "no answer from the hub: the message may or may not have been published" });
      return;
    }
    if (answer.status === 200) {
      this.receive(answer.frames);
    } else {
      const err = answer.frames.find((f) => f.type === "error") ?? { code: "unavailable", message: `the hub answered ${answer.status}` };
      for (const p of batch) this.ack(p.frame.id, { ...err, retry_ms: err.retry_ms ?? answer.retryMs });
    }
    for (const p of batch) this.ack(p.frame.id, { type: "error", code: "unavailable", message: "the hub did not answer this publish" });
  }

  // ack answers a publish to the sink that made it, with the sink's id.
  ack(wire, frame) {
    const p = this.pending.get(wire);
    if (!p) return;
    this.forget(wire);
    p.sink.post({ kind: "ack", id: p.id, frame: { type: "error", ...frame, topic: p.frame.topic, id: p.id } });
  }

  forget(wire) {
    const p = this.pending.get(wire);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(wire);
    this.outbox = this.outbox.filter((q) => q !== p);
  }

  failAll(err) {
    for (const wire of [...this.pending.keys()]) this.ack(wire, { ...err, type: "error" });
  }

  // post sends frames as a long-poll and returns the status, the frames
  // answered (none for an answer that is not the hub's, a proxy's error
  // page say) and the Retry-After, in ms.
  async post(frames, signal) {
    const u = new URL(this.url);
    u.searchParams.set("v", String(VERSION));
    return this.answer(this.impl.fetch(u.toString(), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(frames),
      credentials: "same-origin",
      signal,
    }));
  }

  // poll is a long-poll that only subscribes, as a GET when its URL is
  // short enough for every proxy (a proxy may send a GET again to another
  // server when the first fails, never a POST), else as a POST.
  async poll(topics, signal) {
    const u = new URL(this.url);
    u.searchParams.set("v", String(VERSION));
    u.searchParams.set("transport", "longpoll");
    for (const [topic] of topics) u.searchParams.append("topic", topic);
    u.searchParams.set("cursors", topics.map(([, cursor]) => cursor).join(","));
    if (u.toString().length > MAX_GET_URL) {
      return this.post(topics.map(([topic, cursor]) => ({ op: "subscribe", topic, cursor })), signal);
    }
    return this.answer(this.impl.fetch(u.toString(), { credentials: "same-origin", signal }));
  }

  // answer reads a long-poll's response.
  async answer(response) {
    const resp = await response;
    let answer = [];
    try {
      answer = await resp.json();
    } catch {
      // not the hub's answer
    }
    const after = Number(resp.headers.get("Retry-After"));
    return { status: resp.status, frames: Array.isArray(answer) ? answer : [], retryMs: after > 0 ? after * 1000 : undefined };
  }
}

// refusal turns a long-poll's answer other than 200 into what lost needs.
function refusal(answer, proved) {
  const err = answer.frames.find((f) => f.type === "error");
  const info = { proved, status: answer.status, retryMs: answer.retryMs, code: err?.code, reason: err?.message, frames: answer.frames };
  switch (answer.status) {
    case 400:
    case 403:
    case 413:
      return { ...info, final: true };
    case 429:
      return { ...info, longer: true };
    default:
      return info; // 503 and the proxies' 502 and 504: again after a while
  }
}

// The WebSocket transport: one socket, a frame per message both ways.
class WebSocketTransport {
  name = "websocket";
  #open = false;
  #closed = false;

  constructor(conn) {
    this.conn = conn;
  }

  start() {
    const c = this.conn;
    try {
      this.ws = new c.impl.WebSocket(c.wsURL, [SUBPROTOCOL]);
    } catch (err) {
      queueMicrotask(() => c.lost(this, { tryNext: true, reason: String(err) }));
      return;
    }
    const ws = this.ws;
    ws.onopen = () => {
      if (this.#closed) return;
      this.#open = true;
      for (const [topic, cursor] of c.followed()) this.follow(topic, cursor);
      c.opened(this, true);
    };
    ws.onmessage = (e) => {
      if (this.#closed) return;
      let f;
      try {
        f = JSON.parse(String(e.data));
      } catch {
        return; // not a frame: clients ignore what they cannot read
      }
      c.receive([f]);
    };
    // The close event that follows an error says more; an error nobody
    // listens to is thrown by Node's ws.
    ws.onerror = () => {};
    ws.onclose = (e) => {
      if (this.#closed) return;
      this.#closed = true;
      c.lost(this, closeInfo(e.code, e.reason, this.#open));
    };
  }

  send(frame) {
    if (!this.#open || this.#closed) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  follow(topic, cursor) {
    this.send({ op: "subscribe", topic, cursor });
  }

  unfollow(topic) {
    this.send({ op: "unsubscribe", topic });
  }

  close() {
    this.#closed = true;
    try {
      this.ws?.close(1000);
    } catch {
      // closing a socket that failed
    }
  }
}

// closeInfo reads a WebSocket's close code (docs/hub.md): reconnect after
// 1001, 1006, 1011 and 4000-4099 (4029 after a longer back-off); not as
// before after 1003, 1009 and 4400-4499.
function closeInfo(closeCode, reason, proved) {
  if ((closeCode >= 4400 && closeCode <= 4499) || closeCode === 1003 || closeCode === 1009) return { proved, final: true, closeCode, reason };
  if (closeCode === 4029) return { proved, longer: true, closeCode, reason };
  return { proved, tryNext: !proved, closeCode, reason };
}

// A transport that publishes with POSTs (a long-poll of publishes) and
// follows a new set of topics by asking again: changed is its subclass's.
class PostingTransport {
  send() {
    return false;
  }

  follow() {
    this.changed();
  }

  unfollow() {
    this.changed();
  }
}

// The event-stream transport: an EventSource for the topics, reopened when
// they change.
class EventStreamTransport extends PostingTransport {
  name = "sse";
  #es = null;
  #open = false;
  #closed = false;
  #reopening = false;
  #pinging = false;

  constructor(conn) {
    super();
    this.conn = conn;
  }

  start() {
    const c = this.conn;
    const topics = c.followed();
    if (topics.length === 0) {
      this.#ping();
      return;
    }
    const u = new URL(c.url);
    u.searchParams.set("v", String(VERSION));
    u.searchParams.set("transport", "sse");
    for (const [topic] of topics) u.searchParams.append("topic", topic);
    u.searchParams.set("cursors", topics.map(([, cursor]) => cursor).join(","));
    let es;
    try {
      es = new c.impl.EventSource(u.toString());
    } catch (err) {
      queueMicrotask(() => c.lost(this, { tryNext: true, reason: String(err) }));
      return;
    }
    this.#es = es;
    es.onopen = () => {
      if (this.#es !== es) return;
      this.#open = true;
      c.opened(this, true);
    };
    const onFrame = (e) => {
      if (this.#es !== es) return;
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      c.receive([f]);
    };
    for (const type of ["subscribed", "message", "missed", "ping", "hub-error"]) es.addEventListener(type, onFrame);
    es.onerror = () => {
      if (this.#es !== es) return;
      // EventSource would reconnect by itself, or not at all after a
      // refusal, and says nothing of which: it is closed here, and a
      // long-poll asks the hub why.
      this.#es = null;
      es.close();
      this.#probe();
    };
  }

  // #ping checks that the hub answers, while there is no topic to stream;
  // topics followed meanwhile are streamed once it has.
  async #ping() {
    const c = this.conn;
    let answer;
    this.#pinging = true;
    try {
      answer = await c.post([{ op: "ping" }]);
    } catch {
      if (!this.#closed) c.lost(this, { proved: false, reason: "the hub is unreachable" });
      return;
    } finally {
      this.#pinging = false;
    }
    if (this.#closed) return;
    if (answer.status !== 200) {
      c.lost(this, refusal(answer, false));
      return;
    }
    c.opened(this, false);
    if (c.followed().length > 0) this.start();
  }

  // #probe asks, with a long-poll that the ping makes the hub answer at
  // once, why the stream ended or never started: a refusal's status, or
  // nothing (then what the topics have is delivered, and the stream is
  // opened again; if it never opened, long-polling is used instead).
  async #probe() {
    const c = this.conn;
    const frames = c.followed().map(([topic, cursor]) => ({ op: "subscribe", topic, cursor }));
    frames.push({ op: "ping" });
    let answer;
    try {
      answer = await c.post(frames, AbortSignal.timeout(c.publishTimeout));
    } catch {
      if (!this.#closed) c.lost(this, { proved: this.#open, reason: "the hub is unreachable" });
      return;
    }
    if (this.#closed) return;
    if (answer.status !== 200) {
      c.lost(this, refusal(answer, this.#open));
      return;
    }
    c.receive(answer.frames);
    c.lost(this, { proved: this.#open, useLongPoll: !this.#open, reason: "the event stream ended" });
  }

  // changed reopens the stream for the new topics, once for all the
  // changes of one turn of the event loop, from the cursors held.
  changed() {
    if (this.#reopening || this.#pinging) return;
    this.#reopening = true;
    setTimeout(() => {
      this.#reopening = false;
      if (this.#closed) return;
      this.#es?.close();
      this.#es = null;
      this.start();
    }, 0);
  }

  close() {
    this.#closed = true;
    this.#es?.close();
    this.#es = null;
  }
}

// The long-poll transport: a POST listing every topic with its cursor,
// answered when one of them has something, then the next.
class PollTransport extends PostingTransport {
  name = "longpoll";
  #closed = false;
  #abort = null; // the poll in flight
  #restart = false; // the topics changed: poll again with them
  #wake = null; // resolves the wait for topics

  constructor(conn) {
    super();
    this.conn = conn;
  }

  start() {
    this.#loop();
  }

  async #loop() {
    const c = this.conn;
    let first = true;
    while (!this.#closed) {
      const topics = c.followed();
      if (!first && topics.length === 0) {
        await new Promise((resolve) => (this.#wake = resolve));
        continue;
      }
      const abort = new AbortController();
      this.#abort = abort;
      const stuck = setTimeout(() => abort.abort(), 2 * c.pollTimeout);
      let answer;
      try {
        if (first) {
          // With a ping, answered at once: the transport is up.
          const frames = topics.map(([topic, cursor]) => ({ op: "subscribe", topic, cursor }));
          answer = await c.post([...frames, { op: "ping" }], abort.signal);
        } else {
          answer = await c.poll(topics, abort.signal);
        }
      } catch {
        if (this.#closed) return;
        if (this.#restart) {
          this.#restart = false;
          continue;
        }
        c.lost(this, { proved: !first, reason: abort.signal.aborted ? "a long-poll got no answer" : "the hub is unreachable" });
        return;
      } finally {
        clearTimeout(stuck);
        this.#abort = null;
      }
      if (this.#closed) return;
      this.#restart = false;
      if (answer.status !== 200) {
        c.lost(this, refusal(answer, !first));
        return;
      }
      if (first) {
        first = false;
        c.opened(this, true);
      }
      c.receive(answer.frames);
      // The hub could not hold the poll (draining, full): poll again later.
      const wait = Math.max(0, ...answer.frames.filter((f) => f.type === "error" && f.code === "unavailable").map((f) => f.retry_ms ?? 1000));
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  // changed asks again, with the new topics: the poll in flight is
  // abandoned (what it would have answered comes again, from the cursors).
  changed() {
    if (this.#abort) {
      this.#restart = true;
      this.#abort.abort();
    }
    this.#wake?.();
    this.#wake = null;
  }

  close() {
    this.#closed = true;
    this.#abort?.abort();
    this.#wake?.();
  }
}

// serveTabs runs in the shared worker: each tab's port is a sink of one
// Connection.
function serveTabs(scope) {
  const connections = new Map();
  scope.addEventListener("connect", (e) => {
    const port = e.ports[0];
    const sink = { post: (m) => port.postMessage(m) };
    let conn = null;
    port.onmessage = ({ data: m }) => {
      switch (m.op) {
        case "hello": {
          const key = JSON.stringify([m.url, m.options]);
          conn = connections.get(key);
          if (!conn) {
            conn = new Connection(m.url, m.options);
            connections.set(key, conn);
          }
          conn.attach(sink);
          break;
        }
        case "lock":
          // Granted once the tab has released it: the tab is gone.
          scope.navigator.locks.request(m.name, () => conn?.detach(sink));
          break;
        case "close":
          conn?.detach(sink);
          port.close();
          break;
        default:
          conn?.handle(sink, m);
      }
    };
  });
}

if (typeof SharedWorkerGlobalScope === "function" && globalThis instanceof SharedWorkerGlobalScope) serveTabs(globalThis);
