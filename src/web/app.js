// Ilo's web client: REST (api.md) to register and log in, then the potion.v1 WebSocket
// (potion-protocol.md) to chat. No framework and no build step; every text from the network is
// put on the page with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

const store = {
  // The API key belongs to this browser; the session token to this tab.
  get apiKey() { return localStorage.getItem("ilo.apiKey"); },
  set apiKey(v) { v ? localStorage.setItem("ilo.apiKey", v) : localStorage.removeItem("ilo.apiKey"); },
  get session() { return JSON.parse(sessionStorage.getItem("ilo.session") || "null"); },
  set session(v) { v ? sessionStorage.setItem("ilo.session", JSON.stringify(v)) : sessionStorage.removeItem("ilo.session"); },
};

// ---------------------------------------------------------------- REST

class ApiError extends Error {
  constructor(status, body) {
    super(body.detail || `HTTP ${status}`);
    this.status = status;
    this.code = body.code;
    this.errors = body.errors || [];
  }
}

async function api(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let reply;
  try {
    reply = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, { detail: "The server cannot be reached. Check your connection and try again.", code: "network" });
  }
  const text = await reply.text();
  const parsed = text ? JSON.parse(text) : {};
  if (!reply.ok) throw new ApiError(reply.status, parsed);
  return parsed;
}

/** An API key for this browser, obtained once with POST /key and kept. */
async function apiKey(fresh) {
  if (store.apiKey && !fresh) return store.apiKey;
  const reply = await api("POST", "/key");
  store.apiKey = reply.detail;
  note("This browser obtained its own API key from the server and keeps it for you.");
  return store.apiKey;
}

/** Adds a sentence to the notice under the header. */
function note(text) {
  $("notice").textContent = `${$("notice").textContent} ${text}`.trim();
}

/** Runs `call` with this browser's API key; a revoked or unknown key is replaced once. */
async function withApiKey(call) {
  try {
    return await call(await apiKey(false));
  } catch (e) {
    if (e.code !== "invalid_api_key") throw e;
    return call(await apiKey(true));
  }
}

/** A fresh ECDH P-256 key pair; the public half is registered for end-to-end encryption and
 *  the private half stays in this browser. */
async function newPublicKey(username) {
  if (!crypto.subtle) {
    throw new ApiError(0, { detail: "Creating keys needs a secure page: open Ilo over HTTPS or on localhost.", code: "insecure_context" });
  }
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveKey"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  localStorage.setItem(`ilo.privateKey.${username}`, JSON.stringify(jwk));
  return btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// ---------------------------------------------------------------- sign-in form

const RULES = {
  length: (p) => [...p].length >= 8 && [...p].length <= 128,
  lower: (p) => /\p{Ll}/u.test(p),
  upper: (p) => /\p{Lu}/u.test(p),
  digit: (p) => /\p{Nd}/u.test(p),
  symbol: (p) => /[^\p{L}\p{Nd}_\s]/u.test(p),
};

/** Marks each password rule met or unmet as the user types; returns whether all are met. */
function checkPasswordRules(mark) {
  const password = $("password").value;
  let all = true;
  for (const li of $("password-rules").children) {
    const met = RULES[li.dataset.rule](password);
    all &&= met;
    li.classList.toggle("met", met);
    li.classList.toggle("unmet", mark && !met);
  }
  return all;
}

function clearAuthErrors() {
  for (const id of ["auth-error", "username-error", "password-error"]) $(id).textContent = "";
  $("username").removeAttribute("aria-invalid");
  $("password").removeAttribute("aria-invalid");
}

/** Shows each broken rule beside its field, anything else under the form. */
function showAuthError(e) {
  const byField = { username: [], password: [] };
  for (const { field, message } of e.errors) (byField[field] || (byField.other ||= [])).push(message);
  for (const field of ["username", "password"]) {
    if (byField[field].length) {
      $(`${field}-error`).textContent = byField[field].join(". ");
      $(field).setAttribute("aria-invalid", "true");
    }
  }
  if (e.code === "weak_password" || byField.password.length) checkPasswordRules(true);
  const shownBeside = byField.username.length || byField.password.length;
  if (!shownBeside || byField.other) $("auth-error").textContent = e.message;
  (byField.username.length ? $("username") : byField.password.length ? $("password") : $("auth-error")).focus?.();
}

async function onAuthSubmit(event) {
  event.preventDefault();
  const action = event.submitter?.value || "login";
  const username = $("username").value.trim();
  const password = $("password").value;
  clearAuthErrors();
  $("notice").textContent = "";
  if (action === "register" && !checkPasswordRules(true)) {
    $("password-error").textContent = "The password does not meet every rule above.";
    $("password").setAttribute("aria-invalid", "true");
    $("password").focus();
    return;
  }
  setBusy(true);
  try {
    if (action === "register") {
      const public_key = await newPublicKey(username);
      await withApiKey((api_key) => api("POST", "/user", { username, password, public_key, api_key }));
      note(`Account ${username} created.`);
    }
    const reply = await withApiKey((api_key) => api("PUT", "/user", { username, password, api_key }));
    store.session = { user: username, token: reply.token, expiresAt: reply.expires_at };
    $("password").value = "";
    enterChat();
  } catch (e) {
    showAuthError(e);
  } finally {
    setBusy(false);
  }
}

function setBusy(busy) {
  for (const id of ["login", "register"]) $(id).disabled = busy;
}

// ---------------------------------------------------------------- chat state

const chat = {
  rooms: new Map(), // room -> { log: <ol>, members: Map(user -> public key), button }
  active: null,
  wanted: [], // rooms to be in, rejoined after a reconnect, in join order
  socket: null,
  attempt: 0,
  retryTimer: null,
  nextRef: 1,
};

function status(text, problem) {
  $("status").textContent = text;
  $("status").classList.toggle("problem", Boolean(problem));
}

function enterChat() {
  const session = store.session;
  $("auth").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  $("whoami").hidden = false;
  $("whoami").textContent = session.user;
  connect();
  $("room-name").focus();
}

function leaveChat(reason) {
  clearTimeout(chat.retryTimer);
  chat.attempt = 0;
  const socket = chat.socket;
  chat.socket = null;
  socket?.close(1000);
  for (const room of [...chat.rooms.keys()]) dropRoom(room);
  chat.wanted = [];
  store.session = null;
  $("chat").hidden = true;
  $("auth").hidden = false;
  $("logout").hidden = true;
  $("whoami").hidden = true;
  status(reason || "", Boolean(reason));
  $("username").focus();
}

async function logout() {
  const session = store.session;
  leaveChat("");
  if (session) await api("DELETE", "/session", undefined, session.token).catch(() => {});
  status("Logged out.");
}

// ---------------------------------------------------------------- the connection

const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 15000;

/** Close codes after which reconnecting cannot help without a new login. */
const SESSION_ENDED = 4001;

function connect() {
  const session = store.session;
  if (!session) return;
  status(chat.attempt ? "Reconnecting…" : "Connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // The token travels as a subprotocol, never in the URL.
  const socket = new WebSocket(`${scheme}//${location.host}/ws`, ["potion.v1", `bearer.${session.token}`]);
  chat.socket = socket;
  socket.onmessage = (event) => socket === chat.socket && onFrame(JSON.parse(event.data));
  socket.onclose = (event) => socket === chat.socket && onClose(event.code);
}

function onClose(code) {
  chat.socket = null;
  setComposer(false);
  if (code === SESSION_ENDED) {
    leaveChat("Your session has ended. Please log in again.");
    return;
  }
  // 1001: the relay is going away and another can take us at once; otherwise back off.
  const delay = code === 1001 && chat.attempt === 0
    ? Math.random() * 1000
    : Math.random() * Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** chat.attempt);
  chat.attempt += 1;
  const why = { 1001: "the server is restarting", 1009: "a message was too large", 4000: "it was idle", 4008: "too many messages were sent", 4009: "it fell behind" }[code] || "the connection dropped";
  status(`Disconnected: ${why}. Reconnecting in ${Math.ceil(delay / 1000)} s (attempt ${chat.attempt})…`, true);
  // Also in each room's log, so a gap in the conversation is explained where it happened.
  if (chat.attempt === 1) for (const room of chat.rooms.keys()) addLine(room, eventLine(`Connection lost: ${why}. Reconnecting…`));
  chat.retryTimer = setTimeout(async () => {
    // A browser cannot read the relay's 401: after a failed attempt, ask the API whether the
    // session still stands before trying again.
    if (chat.attempt > 1 && !(await sessionValid())) {
      leaveChat("Your session has ended. Please log in again.");
      return;
    }
    connect();
  }, delay);
}

/** Whether the API still accepts the token (an unreachable API is not a verdict). */
async function sessionValid() {
  const session = store.session;
  if (!session) return false;
  try {
    await api("GET", "/session", undefined, session.token);
    return true;
  } catch (e) {
    return e.status !== 401;
  }
}

function sessionExpired() {
  const session = store.session;
  return !session || Date.parse(session.expiresAt) <= Date.now();
}

function send(frame) {
  if (chat.socket?.readyState === WebSocket.OPEN) chat.socket.send(JSON.stringify(frame));
}

function onFrame(frame) {
  switch (frame.type) {
    case "welcome":
      chat.attempt = 0;
      status(`Connected as ${frame.user}.`);
      for (const room of chat.wanted) send({ type: "join", room });
      setComposer(Boolean(chat.active));
      break;
    case "joined": onJoined(frame); break;
    case "left": dropRoom(frame.room); break;
    case "message": addLine(frame.room, messageLine(frame)); break;
    case "presence": onPresence(frame); break;
    case "error": onError(frame); break;
  }
}

function onError(frame) {
  if (frame.code === "bad_room" || frame.code === "too_many_rooms") {
    chat.wanted = chat.wanted.filter((r) => chat.rooms.has(r));
    $("room-error").textContent = frame.detail;
  } else {
    $("send-error").textContent = frame.detail;
  }
}

// ---------------------------------------------------------------- rooms

function onJoined(frame) {
  let room = chat.rooms.get(frame.room);
  if (!room) {
    room = { log: document.createElement("ol"), members: new Map() };
    room.log.className = "log";
    room.log.setAttribute("role", "log");
    room.log.setAttribute("aria-label", `Messages in ${frame.room}`);
    room.log.dataset.room = frame.room;
    $("logs").append(room.log);
    const li = document.createElement("li");
    room.button = document.createElement("button");
    room.button.type = "button";
    room.button.textContent = `# ${frame.room}`;
    room.button.dataset.room = frame.room;
    room.button.addEventListener("click", () => activate(frame.room));
    li.append(room.button);
    $("room-list").append(li);
    chat.rooms.set(frame.room, room);
    addLine(frame.room, eventLine(`You joined ${frame.room}.`));
  } else {
    addLine(frame.room, eventLine(`Back in ${frame.room}.`));
  }
  room.members = new Map(frame.members.map((m) => [m.user, m.public_key]));
  activate(frame.room);
  $("message").focus();
}

function onPresence(frame) {
  const room = chat.rooms.get(frame.room);
  if (!room) return;
  if (frame.event === "join") room.members.set(frame.user, frame.public_key);
  else room.members.delete(frame.user);
  addLine(frame.room, eventLine(`${frame.user} ${frame.event === "join" ? "joined" : "left"}.`));
  if (chat.active === frame.room) renderMembers();
}

function dropRoom(name) {
  const room = chat.rooms.get(name);
  chat.wanted = chat.wanted.filter((r) => r !== name);
  if (!room) return;
  room.log.remove();
  room.button.parentElement.remove();
  chat.rooms.delete(name);
  if (chat.active === name) activate(chat.rooms.keys().next().value ?? null);
}

function activate(name) {
  chat.active = name;
  for (const [room, { log, button }] of chat.rooms) {
    log.hidden = room !== name;
    button.setAttribute("aria-current", String(room === name));
  }
  $("room-title").textContent = name ? `# ${name}` : "No room yet";
  $("leave").hidden = !name;
  $("message").placeholder = name ? `Message # ${name}` : "Join a room to chat";
  setComposer(Boolean(name) && chat.socket?.readyState === WebSocket.OPEN);
  renderMembers();
}

function renderMembers() {
  const list = $("member-list");
  list.replaceChildren();
  const room = chat.rooms.get(chat.active);
  if (!room) return;
  for (const user of [...room.members.keys()].sort()) {
    const li = document.createElement("li");
    li.textContent = user;
    list.append(li);
  }
}

function setComposer(enabled) {
  $("message").disabled = !enabled;
  $("send").disabled = !enabled;
}

function onJoin(event) {
  event.preventDefault();
  const room = $("room-name").value.trim();
  $("room-error").textContent = "";
  if (!/^[\p{L}\p{N}\-_.:]{1,64}$/u.test(room)) {
    $("room-error").textContent = "Room names are 1 to 64 letters, digits, -, _, . or :.";
    $("room-name").focus();
    return;
  }
  $("room-name").value = "";
  if (chat.rooms.has(room)) {
    activate(room);
    return;
  }
  if (!chat.wanted.includes(room)) chat.wanted.push(room);
  send({ type: "join", room });
}

function onLeave() {
  if (!chat.active) return;
  const room = chat.active;
  chat.wanted = chat.wanted.filter((r) => r !== room);
  send({ type: "leave", room });
  $("room-name").focus();
}

// ---------------------------------------------------------------- messages

const MAX_BODY_BYTES = 16384;

function onSend(event) {
  event.preventDefault();
  const body = $("message").value;
  $("send-error").textContent = "";
  if (!body.trim() || !chat.active) return;
  if (new TextEncoder().encode(body).length > MAX_BODY_BYTES) {
    $("send-error").textContent = "This message is longer than 16 KiB.";
    return;
  }
  send({ type: "send", room: chat.active, body, ref: `c-${chat.nextRef++}` });
  $("message").value = "";
}

function messageLine(frame) {
  const li = document.createElement("li");
  li.className = "message";
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = new Date(frame.ts).toISOString();
  time.textContent = new Date(frame.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = frame.from;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = frame.body;
  li.append(time, from, body);
  return li;
}

function eventLine(text) {
  const li = document.createElement("li");
  li.className = "event";
  li.textContent = text;
  return li;
}

function addLine(roomName, li) {
  const room = chat.rooms.get(roomName);
  if (!room) return;
  const logs = $("logs");
  const atBottom = logs.scrollHeight - logs.scrollTop - logs.clientHeight < 40;
  room.log.append(li);
  if (atBottom) logs.scrollTop = logs.scrollHeight;
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", onAuthSubmit);
  $("password").addEventListener("input", () => checkPasswordRules(false));
  $("join-form").addEventListener("submit", onJoin);
  $("send-form").addEventListener("submit", onSend);
  $("leave").addEventListener("click", onLeave);
  $("logout").addEventListener("click", logout);
  if (!sessionExpired()) enterChat();
  else $("username").focus();
});
