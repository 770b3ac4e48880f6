// Drives the hub's own client (../../client.js) from Node, given the ws
// package's WebSocket, the eventsource package's EventSource and Node's
// fetch: commands come in on stdin and events go out on stdout, one JSON
// object a line, so that a Go test can play the page.
//
//   node client.mjs URL TRANSPORT (or "auto": the client's own order) [PING_INTERVAL_MS]
//   stdin:  {"op":"subscribe","topic":"a","cursor":""}
//           {"op":"unsubscribe","topic":"a"}
//           {"op":"publish","topic":"a","data":"hi","ref":1}
//           {"op":"reconnect"}
//           {"op":"close"}
//   stdout: {"event":"state","state":"connected","transport":"websocket"} (and final, code, status, closeCode, reason)
//           {"event":"message","frame":{…}} (and subscribed, missed)
//           {"event":"published","ref":1,"frame":{…}}, {"event":"refused","ref":1,"code":"forbidden"}
//           {"event":"error","code":"forbidden","topic":"b"}
import { createInterface } from "node:readline";
import { EventSource } from "eventsource";
import WebSocket from "ws";
import { Hub } from "../../client.js";

const [url, transport, pingInterval] = process.argv.slice(2);
const hub = new Hub(url, {
  WebSocket,
  EventSource,
  fetch,
  transports: transport === "auto" ? undefined : [transport],
  backoff: { base: 20, max: 400 },
  pingInterval: pingInterval ? Number(pingInterval) : undefined,
});
const out = (o) => console.log(JSON.stringify(o));
hub.addEventListener("state", (e) => out({ event: "state", ...e.detail }));
for (const type of ["subscribed", "message", "missed"]) {
  hub.addEventListener(type, (e) => out({ event: type, frame: e.detail }));
}
hub.addEventListener("error", (e) => out({ event: "error", code: e.detail.code, topic: e.detail.topic }));

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  switch (cmd.op) {
    case "subscribe":
      hub.subscribe(cmd.topic, cmd.cursor);
      break;
    case "unsubscribe":
      hub.unsubscribe(cmd.topic);
      break;
    case "publish":
      hub.publish(cmd.topic, cmd.data).then(
        (frame) => out({ event: "published", ref: cmd.ref, frame }),
        (err) => out({ event: "refused", ref: cmd.ref, code: err.code, retryMs: err.retryMs }),
      );
      break;
    case "reconnect":
      hub.reconnect();
      break;
    case "close":
      hub.close();
      process.exit(0);
  }
}
