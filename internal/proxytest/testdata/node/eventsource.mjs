// A standard EventSource (WHATWG semantics, from the eventsource package)
// on the URL in argv[2]. It reports what it sees on stdout, one JSON
// object a line: {"kind":"open"}, {"kind":"event","type","id","data"} for
// each event of the hub's (docs/hub.md), and {"kind":"error","state","code",
// "message"} when the connection fails: state 0 (CONNECTING) means it will
// reconnect by itself, 2 (CLOSED) that it has given up for good. It exits
// when its stdin closes. Trust a self-signed certificate with
// NODE_EXTRA_CA_CERTS.
import { EventSource } from "eventsource";

const report = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const es = new EventSource(process.argv[2]);
es.onopen = () => report({ kind: "open" });
es.onerror = (e) => report({ kind: "error", state: es.readyState, code: e.code ?? 0, message: e.message ?? "" });
for (const type of ["message", "subscribed", "missed", "ping", "hub-error"]) {
  es.addEventListener(type, (e) => report({ kind: "event", type, id: e.lastEventId, data: e.data }));
}
process.stdin.on("end", () => {
  es.close();
  process.exit(0);
});
process.stdin.resume();
