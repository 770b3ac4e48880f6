// A page for the hub's browser tests: it follows one topic with the hub's
// client (?topic=, and ?transport= to force one) and shows what the client
// tells it: its state, each message's data, and each "missed". With
// ?noworker it plays a browser without SharedWorker.
import { Hub } from "/hub/client.js";

const q = new URLSearchParams(location.search);
if (q.has("noworker")) delete globalThis.SharedWorker;
const hub = new Hub("/hub/", q.has("transport") ? { transports: [q.get("transport")] } : {});
const state = document.getElementById("state");
state.dataset.shared = hub.shared;
hub.addEventListener("state", (e) => {
  state.dataset.state = e.detail.state;
  state.dataset.transport = e.detail.transport ?? "";
  state.textContent = e.detail.state;
});

const list = document.getElementById("messages");
function show(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  list.append(li);
}
const sub = hub.subscribe(q.get("topic"));
sub.addEventListener("subscribed", () => (document.body.dataset.subscribed = "yes"));
sub.addEventListener("message", (e) => show("message", e.detail.data));
sub.addEventListener("missed", () => show("missed", "you may have missed messages"));
