// A client of the hub written with the eventsource package (the WHATWG
// EventSource): it prints every event it receives as a JSON line, and
// "disconnected" whenever the stream breaks (EventSource then reconnects
// by itself, with Last-Event-ID), until it has count messages.
//
//   node sse.mjs 'http://127.0.0.1:PORT/hub/?topic=a&topic=b' COUNT
import { EventSource } from "eventsource";

const [url, count] = process.argv.slice(2);
const es = new EventSource(url);
let messages = 0;
for (const type of ["subscribed", "message", "missed", "hub-error"]) {
  es.addEventListener(type, (e) => {
    console.log(JSON.stringify({ event: type, id: e.lastEventId, frame: JSON.parse(e.data) }));
    if (type === "message" && ++messages === Number(count)) {
      es.close();
      process.exit(0);
    }
  });
}
es.onerror = () => {
  console.log(JSON.stringify({ event: "disconnected", readyState: es.readyState }));
  if (es.readyState === EventSource.CLOSED) process.exit(1);
};
