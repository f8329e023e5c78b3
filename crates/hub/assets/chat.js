// The duplex chat page. The protocol (duplex.v1), the reconnects and the resume from the last
// sequence number seen are the client library's (/duplex-client.js, from clients/js): this
// file only shows what it reports and hands it what the user does. No build step: an ES
// module (the page's CSP allows scripts of its own origin only, none inline).
import { DuplexClient } from "/duplex-client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// Browsers cannot set headers on a WebSocket: a --token travels as ?token= in the page URL
// (the library puts it in the WebSocket's URL the same way).
const token = params.get("token");

const state = {
  name: localStorage.getItem("duplex.name") || "",
  // Set by the server's "identity" message (a hub with signed tokens): the name is the
  // token's, and the page never asks for or sends another.
  identity: null,
  room: roomFromPath() || "general",
  // name -> { messages: [], lastSeq, epoch }: kept after leaving a room, so that coming back
  // resumes where the page left it.
  rooms: new Map(),
  known: new Map(), // name -> { members, last_seq } from the server's room list
  members: [],
  client: null,
};

function roomFromPath() {
  const m = location.pathname.match(/^\/rooms\/([A-Za-z0-9._-]{1,64})$/);
  return m ? m[1] : null;
}

function roomState(name) {
  if (!state.rooms.has(name)) state.rooms.set(name, { messages: [], lastSeq: 0, epoch: null });
  return state.rooms.get(name);
}

// ---- connection ----------------------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/rooms/${state.room}`;
}

function connect() {
  // With a token the first join goes without a name (a signed token names us); a hub with a
  // shared token answers "bad_name", and the library joins again with this one.
  const client = new DuplexClient(socketUrl(), {
    token: token || undefined,
    name: state.name || undefined,
    backoff: { initial: 500, max: 8000 },
  });
  state.client = client;

  client.on("state", (s) => {
    setStatus(s);
    if (s.state === "open") refreshRooms();
    // Messages typed while offline wait in the library's queue and go once the room is back.
    setComposer(s.state !== "closed", s.state === "open");
  });
  client.on("close", (c) => {
    // 4000: we read too slowly and were cut off; 1001: the server restarts. Both say "come
    // back and resume", which the library does; after 1008 it does not (it would only be cut
    // off again).
    const why = { 1001: "server restarting", 1008: "too many messages", 4000: "fell behind", 1009: "message too large" }[c.code];
    if (why) notice(`Disconnected: ${why}. ${c.reconnect ? "Reconnecting…" : "Reload the page to reconnect."}`);
  });
  client.on("message", (m) => addMessage(m));
  client.on("history", (h) => {
    const r = roomState(h.room);
    r.epoch = h.epoch;
    for (const m of h.messages) addMessage(m);
  });
  client.on("gap", (g) => {
    const r = roomState(g.room);
    r.lastSeq = g.firstSeq - 1;
    if (g.room === state.room) {
      notice(g.firstSeq > 1
        ? `Some messages are no longer available: the history now starts at #${g.firstSeq}.`
        : "This room's history was lost on the server; it starts over.");
    }
  });
  client.on("presence", (p) => {
    const known = state.known.get(p.room);
    if (known) known.members = p.count;
    if (p.room === state.room) {
      state.members = p.members;
      renderMembers();
      if (p.name !== state.name) notice(`${p.name} ${p.event === "joined" ? "joined" : "left"}`);
    }
    renderRooms();
  });
  client.on("identity", (i) => {
    state.identity = i;
    state.name = i.name;
    $("welcome").close();
    showMe();
  });
  client.on("error", (e) => {
    if (e.code === "bad_name" && !state.identity) {
      // The hub wants a name and the page has none (or one it refused): ask.
      if (!$("welcome").open) $("welcome").showModal();
      return;
    }
    if (e.code === "transport") return; // the status shows it; the library reconnects
    notice(`⚠ ${e.message}`);
  });

  join(state.room);
}

// Joins with the last sequence number seen (the library does the same on every reconnect), so
// the server replays exactly what was missed; a first visit gets the room's recent history.
function join(room) {
  const r = roomState(room);
  const position = r.epoch ? { since: r.lastSeq, epoch: r.epoch } : {};
  state.members = [];
  state.client.join(room, position).catch(() => {}); // failures come as "error" events
}

function refreshRooms() {
  state.client.rooms().then((rooms) => {
    state.known = new Map(rooms.map((r) => [r.name, r]));
    renderRooms();
  }, () => {});
}

function addMessage(m) {
  const r = roomState(m.room);
  r.lastSeq = m.seq;
  r.messages.push(m);
  if (r.messages.length > 500) r.messages.shift();
  if (m.room === state.room) renderMessage(m);
}

// ---- rendering -----------------------------------------------------------------------

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text; // never innerHTML: messages are untrusted
  return e;
}

function renderMessage(m) {
  const list = $("messages");
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const li = el("li", m.from === state.name ? "msg mine" : "msg");
  li.dataset.seq = m.seq;
  const meta = el("div", "meta");
  meta.append(el("span", "from", m.from || "anonymous"));
  const time = el("time", "time", new Date(m.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  time.dateTime = new Date(m.time).toISOString();
  meta.append(time);
  li.append(meta, el("div", "text", m.text));
  list.append(li);
  if (stick || m.from === state.name) list.scrollTop = list.scrollHeight;
}

function notice(text) {
  const list = $("messages");
  list.append(el("li", "notice", text));
  list.scrollTop = list.scrollHeight;
}

function renderRoom() {
  $("room-title").textContent = `# ${state.room}`;
  document.title = `#${state.room} · duplex chat`;
  const list = $("messages");
  list.replaceChildren();
  for (const m of roomState(state.room).messages) renderMessage(m);
  renderMembers();
  renderRooms();
}

function renderMembers() {
  $("members").replaceChildren(...state.members.map((n) => el("li", "", n)));
}

function renderRooms() {
  const names = new Set([...state.known.keys(), ...state.rooms.keys(), state.room]);
  const ul = $("rooms");
  ul.replaceChildren(...[...names].sort().map((name) => {
    const li = el("li", name === state.room ? "current" : "", `# ${name}`);
    li.dataset.room = name;
    const known = state.known.get(name);
    if (known && known.members) li.append(el("small", "", String(known.members)));
    li.onclick = () => switchRoom(name);
    return li;
  }));
}

// "online"; "reconnecting in 2.1s" while the library waits to try again, "offline" after a
// few failed attempts (or once it stopped).
function setStatus(s) {
  const status = $("status");
  const shown = s.state === "open" ? "online"
    : s.state === "closed" || (s.state === "reconnecting" && s.attempt > 3) ? "offline"
    : s.state === "reconnecting" ? "reconnecting" : "connecting";
  status.dataset.state = shown;
  const queued = state.client && state.client.queued ? ` · ${state.client.queued} waiting` : "";
  const label = { online: "online", connecting: "connecting…", offline: "offline" }[shown]
    || `reconnecting${s.delay ? ` in ${Math.round(s.delay / 100) / 10}s` : "…"}`;
  status.querySelector("span").textContent = label + (shown === "online" ? "" : queued);
}

function setComposer(enabled, focus) {
  for (const e of $("composer").elements) e.disabled = !enabled;
  if (focus && !$("welcome").open) $("text").focus();
}

// ---- user actions --------------------------------------------------------------------

function switchRoom(name) {
  if (name === state.room) return;
  state.client.leave(state.room);
  state.room = name;
  history.pushState(null, "", `/rooms/${name}${location.search}`);
  renderRoom();
  join(name);
  refreshRooms();
}

$("composer").onsubmit = (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim() || !state.client) return;
  // Accepted (sent, or queued while offline): the input is cleared; a refusal (too large, the
  // queue full, an error of the hub) is shown, and the text given back.
  input.value = "";
  state.client.send(state.room, text).catch((e) => {
    if (e.code === "left" || e.code === "closed") return;
    notice(`⚠ not sent: ${e.message}`);
    if (!input.value) input.value = text;
  });
};

$("room-form").onsubmit = (event) => {
  event.preventDefault();
  const input = $("room-input");
  const name = input.value.trim();
  if (/^[A-Za-z0-9._-]{1,64}$/.test(name)) {
    input.value = "";
    switchRoom(name);
  }
};

window.onpopstate = () => {
  const room = roomFromPath() || "general";
  if (room !== state.room) {
    state.client.leave(state.room);
    state.room = room;
    renderRoom();
    join(room);
  }
};

function showMe() {
  $("me").textContent = state.name ? `signed in as ${state.name}` : "";
  $("me").title = state.identity ? "the name your token gives you" : "";
  $("me").dataset.fixed = state.identity ? "true" : "false";
  $("me").hidden = !state.name;
}

function start() {
  showMe();
  renderRoom();
  connect();
}

$("name-form").onsubmit = () => {
  const name = $("name-input").value.trim();
  if (!name || state.identity) return false;
  state.name = name;
  localStorage.setItem("duplex.name", name);
  $("welcome").close();
  if (state.client) {
    // Asked for by the hub (a shared token) on a connection that is already open.
    showMe();
    state.client.setName(name);
  } else {
    start();
  }
};

if (state.name || token) {
  // With a token the name may come from it: connect first, ask only if the hub wants one.
  start();
} else {
  renderRoom();
  $("welcome").showModal();
}
