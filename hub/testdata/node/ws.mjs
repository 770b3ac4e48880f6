// A client of the hub written with the ws package: it subscribes to a
// topic from now, publishes once, and prints every frame it receives as a
// JSON line, until it has count messages.
//
//   node ws.mjs ws://127.0.0.1:PORT/hub/ TOPIC COUNT
import WebSocket from "ws";

const [url, topic, count] = process.argv.slice(2);
const ws = new WebSocket(url, ["cometkit-hub.v1"]);
let messages = 0;
ws.on("open", () => {
  console.log(JSON.stringify({ type: "open", protocol: ws.protocol }));
  ws.send(JSON.stringify({ op: "subscribe", topic, cursor: "" }));
});
ws.on("message", (data) => {
  const frame = JSON.parse(data);
  console.log(JSON.stringify(frame));
  if (frame.type === "subscribed") {
    ws.send(JSON.stringify({ op: "publish", topic, data: "from node", id: 1 }));
  }
  if (frame.type === "message" && ++messages === Number(count)) ws.close(1000);
});
ws.on("close", (code) => {
  console.log(JSON.stringify({ type: "closed", code }));
  process.exit(0);
});
ws.on("error", (err) => {
  console.error(err.message);
  process.exit(1);
});
