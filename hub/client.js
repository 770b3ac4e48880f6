// The hub's JavaScript client, as an ES module with no build step. This
// version speaks the wire format (docs/hub.md) over WebSocket only: it
// subscribes with cursors, keeps each topic's cursor across reconnects,
// and reconnects with full-jitter exponential back-off. It runs in
// browsers, and in Node given a WebSocket class (the ws package, or the
// global one of Node 22 and later).
//
//   import { Hub } from "/hub/client.js";
//   const hub = new Hub("/hub/");
//   hub.addEventListener("message", (e) => show(e.detail));   // a message frame
//   hub.addEventListener("missed", (e) => warn(e.detail.topic));
//   hub.subscribe("room:lobby");
//   await hub.publish("room:lobby", "hello");                  // when the hub allows it

export const SUBPROTOCOL = "cometkit-hub.v1";

// Close codes after which reconnecting as before would be refused again.
const FINAL = (code) => code >= 4400 && code <= 4499;

export class Hub extends EventTarget {
  // url: the hub's URL (http(s):// or a path; ws(s):// is derived from it).
  // options.WebSocket: the WebSocket class (default: the global one).
  // options.backoff: { base, max } in ms (default 500 and 20000).
  constructor(url, options = {}) {
    super();
    const base = globalThis.location ? globalThis.location.href : undefined;
    const u = new URL(url, base);
    u.protocol = u.protocol === "https:" || u.protocol === "wss:" ? "wss:" : "ws:";
    this.url = u.toString();
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.backoff = { base: 500, max: 20000, ...options.backoff };
    this.cursors = new Map(); // topic → cursor ("" until the hub gives one)
    this.pending = new Map(); // publish id → { resolve, reject }
    this.nextID = 1;
    this.attempt = 0;
    this.state = "connecting";
    this.closed = false;
    this.connect();
  }

  subscribe(topic, cursor = "") {
    if (!this.cursors.has(topic)) this.cursors.set(topic, cursor);
    this.send({ op: "subscribe", topic, cursor: this.cursors.get(topic) });
  }

  unsubscribe(topic) {
    this.cursors.delete(topic);
    this.send({ op: "unsubscribe", topic });
  }

  // publish resolves with the published frame, or rejects with the error
  // frame.
  publish(topic, data) {
    const id = this.nextID++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (!this.send({ op: "publish", topic, data, id })) {
        this.pending.delete(id);
        reject({ type: "error", code: "unavailable", message: "not connected", topic, id });
      }
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.setState("closed");
  }

  send(frame) {
    if (this.state !== "connected") return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  connect() {
    const ws = new this.WebSocket(this.url, [SUBPROTOCOL]);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.setState("connected");
      for (const [topic, cursor] of this.cursors) this.send({ op: "subscribe", topic, cursor });
    };
    ws.onmessage = (e) => this.receive(JSON.parse(e.data));
    ws.onclose = (e) => {
      for (const { reject } of this.pending.values()) reject({ type: "error", code: "unavailable", message: "disconnected" });
      this.pending.clear();
      if (this.closed) return;
      if (FINAL(e.code)) {
        this.setState("closed", { code: e.code, reason: e.reason });
        return;
      }
      // Full jitter: a random wait up to the exponential bound, so that the
      // clients a restart disconnected do not all come back at once.
      const bound = Math.min(this.backoff.max, this.backoff.base * 2 ** this.attempt++);
      this.setState("disconnected", { code: e.code, reason: e.reason });
      this.timer = setTimeout(() => this.connect(), Math.random() * bound);
    };
  }

  receive(f) {
    switch (f.type) {
      case "subscribed":
      case "missed":
      case "message":
        if (this.cursors.has(f.topic)) this.cursors.set(f.topic, f.cursor);
        break;
      case "published":
      case "error": {
        const p = f.id !== undefined && this.pending.get(f.id);
        if (p) {
          this.pending.delete(f.id);
          (f.type === "published" ? p.resolve : p.reject)(f);
          return;
        }
        break;
      }
    }
    this.dispatchEvent(new CustomEvent(f.type, { detail: f }));
  }
}
