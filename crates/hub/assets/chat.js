// The duplex chat page: speaks the JSON protocol (subprotocol "duplex.v1") over one
// WebSocket, reconnects by itself and resumes each room from the last sequence number seen,
// so a dropped connection loses nothing. No build step: plain browser JavaScript.
"use strict";

const PROTOCOL = "duplex.v1";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// Browsers cannot set headers on a WebSocket: a --token travels as ?token= in the page URL.
const token = params.get("token");

const state = {
  name: localStorage.getItem("duplex.name") || "",
  // Set by the server's "identity" message (a hub with signed tokens): the name is the
  // token's, and the page never asks for or sends another.
  identity: null,
  // With a token the page first joins without a name, in case the token names it; a hub with
  // a shared token answers "bad_name", and from then on the page's own name is sent.
  ownName: !token,
  room: roomFromPath() || "general",
  rooms: new Map(), // name -> { messages: [], lastSeq: 0, members: [] }
  known: new Map(), // name -> { members, last_seq } from the server's room list
  ws: null,
  retry: 0,
  timer: null,
};

function roomFromPath() {
  const m = location.pathname.match(/^\/rooms\/([A-Za-z0-9._-]{1,64})$/);
  return m ? m[1] : null;
}

function roomState(name) {
  if (!state.rooms.has(name)) state.rooms.set(name, { messages: [], lastSeq: 0, members: [] });
  return state.rooms.get(name);
}

// ---- connection ----------------------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/rooms/${state.room}${query}`;
}

function connect() {
  clearTimeout(state.timer);
  setStatus(state.retry ? "reconnecting" : "connecting");
  const ws = new WebSocket(socketUrl(), PROTOCOL);
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 0;
    setStatus("online");
    join(state.room);
    send({ type: "rooms" });
    setComposer(true);
  };
  ws.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    handlers[msg.type]?.(msg);
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    setComposer(false);
    // 4000: we read too slowly and were cut off; 1001: the server restarts. Both say "come
    // back and resume", which is what the reconnect does.
    const why = { 1001: "server restarting", 1008: "too many messages", 4000: "fell behind" }[event.code];
    if (why) notice(`Disconnected: ${why}. Reconnecting…`);
    const delay = Math.min(500 * 2 ** state.retry, 8000);
    state.retry += 1;
    setStatus(state.retry > 3 ? "offline" : "reconnecting", delay);
    state.timer = setTimeout(connect, delay);
  };
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(obj));
    return true;
  }
  return false;
}

// Joins with the last sequence number seen, so the server replays exactly what was missed
// (a first visit gets the room's recent history instead).
function join(room) {
  const r = roomState(room);
  const msg = { type: "join", room };
  if (state.ownName && !state.identity) msg.name = state.name;
  if (r.lastSeq > 0) msg.since = r.lastSeq;
  send(msg);
}

// ---- server messages -----------------------------------------------------------------

const handlers = {
  message(m) { addMessage(m); },
  history(h) { for (const m of h.messages) addMessage(m); },
  presence(p) {
    // The whole list comes with our own join; after that, names come and go one by one.
    const r = roomState(p.room);
    if (p.members) {
      r.members = p.members;
    } else if (p.event === "joined") {
      r.members.push(p.name);
    } else {
      const i = r.members.indexOf(p.name);
      if (i >= 0) r.members.splice(i, 1);
    }
    const known = state.known.get(p.room);
    if (known) known.members = p.count;
    if (p.room === state.room) {
      renderMembers();
      if (p.name !== state.name) notice(`${p.name} ${p.event === "joined" ? "joined" : "left"}`);
    }
    renderRooms();
  },
  rooms(list) {
    state.known = new Map(list.rooms.map((r) => [r.name, r]));
    renderRooms();
  },
  identity(i) {
    state.identity = i;
    state.name = i.name;
    $("welcome").close();
    showMe();
  },
  error(e) {
    if (e.code === "bad_name" && !state.identity && !state.ownName) {
      // A shared token, not a signed one: the server wants a name of ours after all.
      state.ownName = true;
      if (state.name) join(state.room);
      else $("welcome").showModal();
      return;
    }
    notice(`⚠ ${e.message}`);
  },
};

function addMessage(m) {
  const r = roomState(m.room);
  if (m.seq <= r.lastSeq) return; // already shown (a replay overlapping what we had)
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
  const ul = $("members");
  ul.replaceChildren(...roomState(state.room).members.map((n) => el("li", "", n)));
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

function setStatus(s, delay) {
  const status = $("status");
  status.dataset.state = s;
  const label = { online: "online", connecting: "connecting…", offline: "offline" }[s]
    || `reconnecting${delay ? ` in ${Math.round(delay / 100) / 10}s` : "…"}`;
  status.querySelector("span").textContent = label;
}

function setComposer(enabled) {
  for (const e of $("composer").elements) e.disabled = !enabled;
  if (enabled) $("text").focus();
}

// ---- user actions --------------------------------------------------------------------

function switchRoom(name) {
  if (name === state.room) return;
  send({ type: "leave", room: state.room });
  state.room = name;
  history.pushState(null, "", `/rooms/${name}${location.search}`);
  renderRoom();
  join(name);
  send({ type: "rooms" });
}

$("composer").onsubmit = (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  if (send({ type: "send", room: state.room, text })) input.value = "";
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
    send({ type: "leave", room: state.room });
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
  if (state.ws) {
    // Asked for by a hub with a shared token, on a connection that is already open.
    showMe();
    join(state.room);
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
