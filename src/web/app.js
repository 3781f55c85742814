// Ilo's web client: REST (api.md) to register and log in, then the potion.v1 WebSocket
// (potion-protocol.md) to chat, every message sealed end to end (e2e.md) for the room's members.
// A module with no globals, no framework and no build step; every text from the network is put
// on the page with textContent, never parsed as HTML.

import * as e2e from "./e2e.js";
import { Known, loadKeys, saveKeys } from "./keystore.js";

const $ = (id) => document.getElementById(id);

const store = {
  // All of it belongs to this browser, for this origin: a reload or a new tab stays logged in
  // and goes back to its rooms; logging out clears the session. The token never goes in a URL.
  get apiKey() { return localStorage.getItem("ilo.apiKey"); },
  set apiKey(v) { v ? localStorage.setItem("ilo.apiKey", v) : localStorage.removeItem("ilo.apiKey"); },
  get session() { return JSON.parse(localStorage.getItem("ilo.session") || "null"); },
  set session(v) { v ? localStorage.setItem("ilo.session", JSON.stringify(v)) : localStorage.removeItem("ilo.session"); },
  rooms(user) { return JSON.parse(localStorage.getItem(`ilo.rooms.${user}`) || "[]"); },
  setRooms(user, rooms) { localStorage.setItem(`ilo.rooms.${user}`, JSON.stringify(rooms)); },
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
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    // Not Ilo's JSON: a proxy's error page, say. Still tell the person something useful.
    throw new ApiError(reply.status, {
      detail: `The server answered ${reply.status} ${reply.statusText || ""}`.trim() + ". Please try again in a moment.",
      code: "bad_reply",
    });
  }
  if (!reply.ok) throw new ApiError(reply.status, parsed);
  return parsed;
}

/** An API key for this browser, obtained once with POST /key and kept. */
async function apiKey(fresh) {
  if (store.apiKey && !fresh) return store.apiKey;
  const reply = await api("POST", "/key");
  store.apiKey = reply.detail;
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

function requireWebCrypto() {
  if (!crypto.subtle) {
    throw new ApiError(0, { detail: "End-to-end encryption needs a secure page: open Ilo over HTTPS or on localhost.", code: "insecure_context" });
  }
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
  // A taken name belongs beside the name.
  if (e.code === "username_taken") byField.username.push(e.message);
  for (const field of ["username", "password"]) {
    if (byField[field].length) {
      $(`${field}-error`).textContent = byField[field].join(". ");
      $(field).setAttribute("aria-invalid", "true");
    }
  }
  if (e.code === "weak_password" || byField.password.length) {
    $("password-rules").hidden = false;
    checkPasswordRules(true);
  }
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
  if (action === "register") $("password-rules").hidden = false; // shown when creating, not when logging in
  if (action === "register" && !checkPasswordRules(true)) {
    $("password-error").textContent = "The password does not meet every rule above.";
    $("password").setAttribute("aria-invalid", "true");
    $("password").focus();
    return;
  }
  setBusy(true);
  try {
    if (action === "register") {
      requireWebCrypto();
      const keys = await e2e.generateKeys();
      await withApiKey((api_key) => api("POST", "/user", { username, password, public_key: keys.bundle, api_key }));
      // Only an account that exists gets keys saved: a refused name never replaces another's.
      await saveKeys(username, keys);
      note(`Account ${username} created. Its encryption keys stay in this browser.`);
    }
    await logIn(username, password);
    $("password").value = "";
    await enterChat();
  } catch (e) {
    showAuthError(e);
  } finally {
    setBusy(false);
  }
}

async function logIn(username, password) {
  const reply = await withApiKey((api_key) => api("PUT", "/user", { username, password, api_key }));
  store.session = { user: username, token: reply.token, expiresAt: reply.expires_at };
}

function setBusy(busy) {
  for (const id of ["login", "register"]) $(id).disabled = busy;
}

// ---------------------------------------------------------------- this browser's keys

/** Whether this browser holds the key registered for `user`; why not, if it does not. */
async function checkKeys(user) {
  requireWebCrypto();
  const keys = await loadKeys(user);
  if (!keys) return { keys: null, why: "This browser has no encryption key for your account." };
  const registered = e2e.parseBundle((await api("GET", `/user/${encodeURIComponent(user)}`)).detail);
  if (!registered || e2e.base64url(registered.bytes) !== keys.bundle) {
    return { keys: null, why: "The key in this browser is not the one registered for your account (it was replaced from another device)." };
  }
  return { keys };
}

function showKeySetup(why) {
  $("auth").hidden = true;
  $("chat").hidden = true;
  $("key-setup").hidden = false;
  $("key-why").textContent = why;
  $("key-error").textContent = "";
  $("key-password").value = "";
  $("key-password").focus();
}

/** Gives the account a new key held by this browser: PUT /user/public_key ends every session
 *  of the user, this one included, so it logs in again and goes back to its rooms. */
async function useNewKey(session, password) {
  const keys = await e2e.generateKeys();
  await api("PUT", "/user/public_key", { password, public_key: keys.bundle }, session.token);
  await saveKeys(session.user, keys);
  const socket = chat.socket;
  chat.socket = null; // the relay closes it with 4001: not a reason to leave the chat
  socket?.close(1000);
  await logIn(session.user, password);
  await enterChat();
  note("This browser has a new key. Other members will see that your key changed.");
}

async function onNewKey(event) {
  event.preventDefault();
  const session = store.session;
  const password = $("key-password").value;
  $("key-error").textContent = "";
  $("new-key").disabled = true;
  try {
    await useNewKey(session, password);
    $("key-password").value = "";
  } catch (e) {
    $("key-error").textContent = e.status === 401 && e.code === "invalid_token"
      ? "Your session has ended. Log out and log in again."
      : e.message;
  } finally {
    $("new-key").disabled = false;
  }
}

// ---------------------------------------------------------------- chat state

const chat = {
  rooms: new Map(), // room -> { log, members: Map(user -> bundle | null), button, seen: Set(mid), folded }
  active: null,
  wanted: [], // rooms to be in, rejoined after a reconnect, in join order
  positions: new Map(), // room -> { epoch, offset } of the last message seen: `since` on rejoin
  socket: null,
  attempt: 0,
  retryTimer: null,
  nextRef: 1,
  me: null,
  keys: null, // { x, ed, bundle } from IndexedDB
  known: null, // trust on first use
  inbox: Promise.resolve(), // frames are handled one after another, in order
  outbox: Promise.resolve(), // and messages are sealed and sent in order
  lookups: new Map(), // user -> { at, bundle } from GET /user/{user}
  below: 0, // messages that arrived below the view while scrolled up
  following: true, // the view is at the bottom and follows new messages
};

function status(text, problem) {
  $("status").textContent = text;
  $("status").classList.toggle("problem", Boolean(problem));
}

async function enterChat() {
  const session = store.session;
  $("auth").hidden = true;
  $("logout").hidden = false;
  $("account").hidden = false;
  $("whoami").hidden = false;
  $("whoami").textContent = session.user;
  let checked;
  try {
    checked = await checkKeys(session.user);
  } catch (e) {
    status(e.message, true);
    return;
  }
  if (!checked.keys) {
    showKeySetup(checked.why);
    return;
  }
  chat.keys = checked.keys;
  chat.known = new Known(session.user);
  chat.wanted = store.rooms(session.user);
  $("key-setup").hidden = true;
  $("chat").hidden = false;
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
  chat.keys = null;
  chat.me = null;
  store.session = null;
  $("chat").hidden = true;
  $("key-setup").hidden = true;
  $("auth").hidden = false;
  $("logout").hidden = true;
  $("account").hidden = true;
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
  socket.onmessage = (event) => {
    if (socket !== chat.socket) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return; // not a frame of this protocol
    }
    chat.inbox = chat.inbox.then(() => onFrame(frame)).catch((e) => status(`Something went wrong: ${e.message}`, true));
  };
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

async function onFrame(frame) {
  switch (frame.type) {
    case "welcome":
      chat.attempt = 0;
      chat.me = frame.user;
      status("Connected. Messages are end-to-end encrypted.");
      for (const room of chat.wanted) send(joinFrame(room));
      setComposer(Boolean(chat.active));
      break;
    case "joined": onJoined(frame); break;
    case "left": dropRoom(frame.room); break;
    case "message": await onMessage(frame); break;
    case "presence": onPresence(frame); break;
    case "gap": onGap(frame); break;
    case "error": onError(frame); break;
  }
}

/** How many of a room's last messages the page asks for when it opens the room. */
const HISTORY = 50;

/** A room seen on this page before picks up after the last message seen; one opened anew
 *  asks for its last messages. */
function joinFrame(room) {
  const since = chat.positions.get(room);
  return since ? { type: "join", room, since } : { type: "join", room, history: HISTORY };
}

/** Keeps the room's place in its history (absent when the server keeps none). */
function follow(room, epoch, offset) {
  if (epoch !== undefined && offset !== undefined && chat.rooms.has(room)) chat.positions.set(room, { epoch, offset });
}

const UNRECOVERED = {
  epoch_changed: "the server lost the room's history",
  too_old: "older messages are no longer kept",
  unavailable: "the history cannot be read right now",
};

function onGap(frame) {
  follow(frame.room, frame.epoch, frame.offset);
  addLine(frame.room, eventLine("Some messages may be missing here: the server could not deliver them all.", { warn: true }));
}

function onError(frame) {
  if (frame.code === "bad_room" || frame.code === "too_many_rooms") {
    chat.wanted = chat.wanted.filter((r) => chat.rooms.has(r));
    saveRooms();
    $("room-error").textContent = frame.detail;
  } else {
    $("send-error").textContent = frame.detail;
  }
}

// ---------------------------------------------------------------- rooms and members' keys

function onJoined(frame) {
  let room = chat.rooms.get(frame.room);
  if (!room) {
    room = { log: document.createElement("ol"), members: new Map(), seen: new Set(), folded: null, unread: 0, lastDay: null };
    room.log.className = "log";
    room.log.setAttribute("role", "log");
    room.log.setAttribute("aria-label", `Messages in ${frame.room}`);
    room.log.dataset.room = frame.room;
    $("logs").append(room.log);
    const li = document.createElement("li");
    room.button = document.createElement("button");
    room.button.type = "button";
    room.button.append(`# ${frame.room}`, Object.assign(document.createElement("span"), { className: "count", hidden: true }));
    room.button.dataset.room = frame.room;
    room.button.addEventListener("click", () => activate(frame.room));
    li.append(room.button);
    $("room-list").append(li);
    chat.rooms.set(frame.room, room);
    const intro = frame.missed ? ["Recent messages in ", { name: frame.room }, ":"] : ["You joined ", { name: frame.room }, "."];
    addLine(frame.room, eventLine(intro));
  } else {
    addLine(frame.room, eventLine(["Back in ", { name: frame.room }, "."]));
  }
  room.members = new Map(frame.members.map((m) => [m.user, e2e.parseBundle(m.public_key)]));
  for (const [user, bundle] of room.members) noteKey(user, bundle);
  // Asked-for history was there before: it is not unread. A replay after `since` is.
  room.earlierUntil = frame.recovered === undefined ? frame.offset : 0;
  // The replay follows in order: the room stands before it until each message arrives.
  follow(frame.room, frame.epoch, frame.offset - (frame.missed || 0));
  if (frame.recovered === false) {
    const why = UNRECOVERED[frame.reason] || "the server could not replay everything";
    addLine(frame.room, eventLine(`Some messages may be missing: ${why}.`, { warn: true }));
  }
  activate(frame.room);
  $("message").focus();
}

function sameBundle(a, b) {
  return a === b || Boolean(a && b && a.bytes.length === b.bytes.length && a.bytes.every((byte, i) => byte === b.bytes[i]));
}

function onPresence(frame) {
  const room = chat.rooms.get(frame.room);
  if (!room) return;
  if (frame.event === "join") {
    const bundle = e2e.parseBundle(frame.public_key);
    // Already listed with this key (relays announce their members again after Redis restarts).
    if (room.members.has(frame.user) && sameBundle(room.members.get(frame.user), bundle)) return;
    room.members.set(frame.user, bundle);
    noteKey(frame.user, bundle);
  } else {
    room.members.delete(frame.user);
  }
  addLine(frame.room, eventLine([{ name: frame.user }, frame.event === "join" ? " joined." : " left."]));
  if (chat.active === frame.room) renderMembers();
}

/** Trust on first use: a key unlike the one known before is announced in every room the user
 *  is in; a verified user's new key holds sending until it is accepted. */
function noteKey(user, bundle) {
  if (!bundle || user === chat.me) return;
  const seen = chat.known.saw(user, e2e.base64url(bundle.bytes));
  if (seen !== "changed" && seen !== "held") return;
  const who = { name: user };
  const text = seen === "held"
    ? [who, "'s key changed, and you had verified ", who, ". Nothing is sent to rooms with ", who, " until you compare the new safety number and accept it."]
    : [who, "'s key changed: a new device, or someone else. Compare safety numbers to be sure."];
  for (const [name, room] of chat.rooms) {
    if (room.members.has(user)) addLine(name, eventLine(text, { warn: true, verify: user }));
  }
}

/** The bundle `user` sends with: from the room, else from the directory (at most every 10 s). */
async function senderBundle(roomName, user, kid) {
  const listed = chat.rooms.get(roomName)?.members.get(user);
  if (listed && sameKid(await e2e.kid(listed), kid)) return listed;
  const cached = chat.lookups.get(user);
  if (cached && Date.now() - cached.at < 10000) return cached.bundle;
  let bundle = null;
  try {
    bundle = e2e.parseBundle((await api("GET", `/user/${encodeURIComponent(user)}`)).detail);
  } catch { /* unknown user, or unreachable: unverifiable */ }
  chat.lookups.set(user, { at: Date.now(), bundle });
  return bundle;
}

const sameKid = (a, b) => a.every((x, i) => x === b[i]);

function dropRoom(name) {
  const room = chat.rooms.get(name);
  chat.wanted = chat.wanted.filter((r) => r !== name);
  if (!room) return;
  room.log.remove();
  room.button.parentElement.remove();
  chat.rooms.delete(name);
  chat.positions.delete(name);
  renderUnread();
  if (chat.active === name) activate(chat.rooms.keys().next().value ?? null);
}

function activate(name) {
  chat.active = name;
  for (const [room, { log, button }] of chat.rooms) {
    log.hidden = room !== name;
    button.setAttribute("aria-current", String(room === name));
  }
  if (name) markRead(name);
  scrollToBottom();
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
  $("show-members").textContent = room ? `Members (${room.members.size})` : "Members";
  if (!room) return;
  for (const user of [...room.members.keys()].sort()) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.dir = "auto";
    name.textContent = user;
    li.append(name);
    li.dataset.user = user;
    if (!room.members.get(user)) {
      li.classList.add("no-key");
      const why = document.createElement("small");
      why.textContent = "cannot receive encrypted messages";
      li.append(why);
    } else if (user !== chat.me) {
      if (chat.known.isVerified(user)) {
        const mark = document.createElement("small");
        mark.className = "verified";
        mark.textContent = "✓ verified";
        li.append(mark);
      }
      li.append(verifyButton(user));
    }
    list.append(li);
  }
}

function verifyButton(user) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  button.textContent = chat.known.isHeld(user) ? "Key changed: verify" : "Verify";
  button.dataset.verify = user;
  button.addEventListener("click", () => openVerify(user));
  return button;
}

// ---------------------------------------------------------------- verification

let verifying = null;

async function openVerify(user) {
  const bundle = [...chat.rooms.values()].map((r) => r.members.get(user)).find(Boolean);
  if (!bundle) return;
  verifying = user;
  const own = e2e.parseBundle(chat.keys.bundle);
  const number = await e2e.safetyNumber(chat.me, own, user, bundle);
  $("verify-title").textContent = `Verify ${user}`;
  $("safety-number").textContent = e2e.grouped(number);
  const held = chat.known.isHeld(user);
  $("verify-state").textContent = held
    ? `${user}'s key changed since you verified it. If the numbers match, accept the new key.`
    : chat.known.isVerified(user)
      ? `You have verified ${user}.`
      : `Compare this number with the one ${user} sees, in person or on a call. If they match, nobody is in between.`;
  $("verify-mark").hidden = held || chat.known.isVerified(user);
  $("verify-accept").hidden = !held;
  $("verify-dialog").showModal();
}

function onVerifyDecision(accept) {
  if (verifying) {
    if (accept) chat.known.trust(verifying);
    else chat.known.verify(verifying);
  }
  $("verify-dialog").close();
  renderMembers();
}

// ---------------------------------------------------------------- messages

const MAX_BODY_BYTES = 16384;

async function onSend(event) {
  event.preventDefault();
  const text = $("message").value;
  $("send-error").textContent = "";
  const room = chat.rooms.get(chat.active);
  if (!text.trim() || !room || !chat.me) return;
  const held = [...room.members.keys()].filter((u) => chat.known.isHeld(u));
  if (held.length) {
    $("send-error").textContent = `Not sent: the key of ${held.join(", ")} changed after you verified it. Verify and accept the new key first.`;
    return;
  }
  const others = [...room.members].filter(([user, bundle]) => user !== chat.me && bundle).map(([, b]) => b);
  const recipients = [e2e.parseBundle(chat.keys.bundle), ...others];
  const size = e2e.bodyLen(recipients.length, text);
  if (size > MAX_BODY_BYTES) {
    const over = Math.ceil(((size - MAX_BODY_BYTES) * 3) / 4);
    $("send-error").textContent = `Not sent: encrypted for the ${recipients.length} people here it would be ${size} bytes, over the ${MAX_BODY_BYTES}-byte limit. Shorten it by about ${over} bytes.`;
    return;
  }
  const roomName = chat.active;
  $("message").value = "";
  fitComposer();
  // Sealing takes a moment: chained, so that messages leave in the order they were written.
  chat.outbox = chat.outbox.then(async () => {
    const body = await e2e.seal(chat.keys, roomName, chat.me, text, recipients);
    send({ type: "send", room: roomName, body, ref: `c-${chat.nextRef++}` });
  }).catch((e) => { $("send-error").textContent = `Not sent: ${e.message}`; });
}

/** Opens a message (in frame order) and shows it, or says plainly why it cannot be read. */
async function onMessage(frame) {
  const room = chat.rooms.get(frame.room);
  if (!room) return;
  follow(frame.room, frame.epoch, frame.offset);
  let parsed;
  try {
    parsed = e2e.parse(frame.body);
  } catch (err) {
    return addUnreadable(frame, err.kind);
  }
  if (parsed.plain !== undefined) return addLine(frame.room, messageLine(frame, parsed.plain, "plain"));
  let opened;
  try {
    const sender = await senderBundle(frame.room, frame.from, parsed.envelope.senderKid);
    opened = await e2e.open(chat.keys, frame.room, frame.from, parsed.envelope, sender);
  } catch (err) {
    if (!(err instanceof e2e.E2eError)) throw err;
    return addUnreadable(frame, err.kind);
  }
  if (room.seen.has(opened.mid)) return; // the same message again: a replay
  room.seen.add(opened.mid);
  room.folded = null;
  addLine(frame.room, messageLine(frame, opened.text, chat.known.isVerified(frame.from) ? "verified" : "encrypted"));
}

/** A message that did not open. Messages not encrypted for you (sent before you joined) fold
 *  into one line; the rest say they could not be verified, never what they claim to say. */
function addUnreadable(frame, kind) {
  const room = chat.rooms.get(frame.room);
  if (kind === "not_for_you") {
    if (room.folded) {
      room.folded.count += 1;
      room.folded.li.textContent = `${room.folded.count} messages were not encrypted for you (sent before you joined, or to another of your keys).`;
      return;
    }
    const li = eventLine("A message from before you joined was not encrypted for you.");
    room.folded = { li, count: 1 };
    return addLine(frame.room, li);
  }
  room.folded = null;
  const from = { name: frame.from };
  const what = kind === "signature" || kind === "unknown_key"
    ? ["A message shown as from ", from, " could not be verified (altered, or not sent by ", from, " here), so it is not shown."]
    : ["A message from ", from, ` could not be read (${kind}).`];
  addLine(frame.room, eventLine(what, { warn: true }));
}

const BADGES = {
  verified: ["encrypted, verified sender", "End-to-end encrypted, signed by the sender, whose safety number you verified"],
  encrypted: ["encrypted", "End-to-end encrypted and signed by the sender's key"],
  plain: ["not encrypted", "Sent without end-to-end encryption: the server could read or change it"],
};

/** A small padlock, drawn here rather than taken from an emoji font the system may lack. */
function lock() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7zm2 0h4V5a2 2 0 0 0-4 0z");
  svg.append(path);
  return svg;
}

function badge(how) {
  const span = document.createElement("span");
  span.className = `badge ${how}`;
  const [label, title] = BADGES[how];
  span.title = title;
  if (how === "plain") {
    span.textContent = label;
    return span;
  }
  const hidden = document.createElement("span");
  hidden.className = "visually-hidden";
  hidden.textContent = label;
  span.append(lock(), hidden);
  if (how === "verified") span.append("✓");
  return span;
}

function messageLine(frame, text, how) {
  const li = document.createElement("li");
  li.className = `message ${how}`;
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = new Date(frame.ts).toISOString();
  time.textContent = new Date(frame.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const from = document.createElement("span");
  from.className = "from";
  from.dir = "auto"; // a name or text in another direction never reorders what is around it
  from.textContent = frame.from;
  const body = document.createElement("span");
  body.className = "body";
  body.dir = "auto";
  body.append(...linked(text));
  if (frame.from === chat.me) {
    li.classList.add("mine");
    const you = document.createElement("span");
    you.className = "visually-hidden";
    you.textContent = " (you)";
    from.append(you);
  }
  li.append(time, from, badge(how), body);
  if (frame.offset <= chat.rooms.get(frame.room)?.earlierUntil) li.classList.add("earlier");
  return li;
}

const LINK = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

/** `text` as nodes: http and https addresses become links (built as elements, never markup,
 *  opened without a referrer or a handle on this page); nothing else does. */
function linked(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    let url;
    try {
      url = new URL(match[0]);
    } catch {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    nodes.push(text.slice(at, match.index));
    const a = document.createElement("a");
    a.href = url.href;
    a.textContent = match[0];
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    nodes.push(a);
    at = match.index + match[0].length;
  }
  nodes.push(text.slice(at));
  return nodes;
}

/** An event in a room's log. `text` is a string, or an array of strings and `{ name }` parts:
 *  names are isolated (`<bdi>`), so a right-to-left name never reorders the sentence. */
function eventLine(text, { warn = false, verify = null } = {}) {
  const li = document.createElement("li");
  li.className = warn ? "event warn" : "event";
  for (const part of [text].flat()) {
    if (typeof part === "string") {
      li.append(part);
    } else {
      const bdi = document.createElement("bdi");
      bdi.textContent = part.name;
      li.append(bdi);
    }
  }
  if (verify) li.append(" ", verifyButton(verify));
  return li;
}

function addLine(roomName, li) {
  const room = chat.rooms.get(roomName);
  if (!room) return;
  const shown = roomName === chat.active;
  const atBottom = isAtBottom();
  const time = li.querySelector("time");
  if (time) {
    const day = new Date(time.dateTime).toDateString();
    if (room.lastDay && room.lastDay !== day) room.log.append(dayLine(time.dateTime));
    room.lastDay = day;
  }
  room.log.append(li);
  const message = li.classList.contains("message") && !li.classList.contains("mine") && !li.classList.contains("earlier");
  if (message && (!shown || document.hidden)) {
    room.unread += 1;
    renderUnread();
  }
  if (!shown) return;
  if (atBottom || li.classList.contains("mine")) {
    scrollToBottom();
  } else if (message) {
    chat.below += 1;
    $("new-messages").textContent = `${chat.below} new message${chat.below === 1 ? "" : "s"} ↓`;
    $("new-messages").hidden = false;
  }
}

function dayLine(iso) {
  const li = document.createElement("li");
  li.className = "day";
  li.setAttribute("role", "separator");
  li.textContent = new Date(iso).toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
  return li;
}

function isAtBottom() {
  const logs = $("logs");
  return logs.scrollHeight - logs.scrollTop - logs.clientHeight < 40;
}

function scrollToBottom() {
  const logs = $("logs");
  logs.scrollTop = logs.scrollHeight;
  chat.following = true;
  chat.below = 0;
  $("new-messages").hidden = true;
}

/** Unread counts: bold and a number on each room, the total in the tab's title. */
function renderUnread() {
  let total = 0;
  for (const room of chat.rooms.values()) {
    total += room.unread;
    const count = room.button.querySelector(".count");
    count.textContent = String(room.unread);
    count.hidden = room.unread === 0;
    room.button.classList.toggle("unread", room.unread > 0);
  }
  document.title = total ? `(${total}) Ilo` : "Ilo";
}

function markRead(name) {
  const room = chat.rooms.get(name);
  if (room && !document.hidden) {
    room.unread = 0;
    renderUnread();
  }
}

/** The message box grows with its lines, up to a few. */
function fitComposer() {
  const box = $("message");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight + 2, 160)}px`;
}

function onComposerKey(event) {
  // Enter sends; Shift+Enter (and composing in an input method) adds a line.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("send-form").requestSubmit();
  }
}

function setComposer(enabled) {
  $("message").disabled = !enabled;
  $("send").disabled = !enabled;
}

/** Remembers the rooms to be in, so that a reload or a new tab goes back to them. */
function saveRooms() {
  const session = store.session;
  if (session) store.setRooms(session.user, chat.wanted);
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
  saveRooms();
  send(joinFrame(room));
}

function onLeave() {
  if (!chat.active) return;
  const room = chat.active;
  chat.wanted = chat.wanted.filter((r) => r !== room);
  saveRooms();
  send({ type: "leave", room });
  $("room-name").focus();
}

// ---------------------------------------------------------------- account

function openAccount() {
  $("account-password").value = "";
  $("account-new-password").value = "";
  $("account-error").textContent = "";
  $("account-done").textContent = "";
  $("account-dialog").showModal();
  $("account-password").focus();
}

/** Deletes the account (`DELETE /user`) after a confirmation. */
async function deleteAccount() {
  const session = store.session;
  const password = $("account-password").value;
  if (!password) return void ($("account-error").textContent = "Type your password to confirm.");
  if (!confirm(`Delete the account ${session.user} for good? This cannot be undone.`)) return;
  try {
    await api("DELETE", "/user", { password }, session.token);
    localStorage.removeItem(`ilo.rooms.${session.user}`);
    $("account-dialog").close();
    leaveChat("");
    status(`The account ${session.user} was deleted.`);
  } catch (e) {
    $("account-error").textContent = e.message;
  }
}

/** A new password (`PUT /user/password`); this session stays, the others end. */
async function changePassword() {
  const session = store.session;
  const password = $("account-password").value;
  const newPassword = $("account-new-password").value;
  $("account-done").textContent = "";
  if (!password) return void ($("account-error").textContent = "Type your current password to confirm.");
  const missing = Object.entries(RULES).filter(([, met]) => !met(newPassword));
  if (missing.length) {
    $("account-error").textContent = "The new password needs 8 or more characters with a lowercase and an uppercase letter, a digit and a symbol.";
    return $("account-new-password").focus();
  }
  try {
    await api("PUT", "/user/password", { password, new_password: newPassword }, session.token);
    $("account-password").value = "";
    $("account-new-password").value = "";
    $("account-error").textContent = "";
    $("account-done").textContent = "Password changed. Your other devices were logged out.";
  } catch (e) {
    $("account-error").textContent = e.message;
  }
}

/** A new key for this browser (`PUT /user/public_key`), after a confirmation. */
async function replaceKey() {
  const session = store.session;
  const password = $("account-password").value;
  if (!password) return void ($("account-error").textContent = "Type your password to confirm.");
  if (!confirm("Create a new key? Others will see that your key changed.")) return;
  try {
    await useNewKey(session, password);
    $("account-dialog").close();
  } catch (e) {
    $("account-error").textContent = e.message;
  }
}

function toggleMembers() {
  const open = $("members").classList.toggle("open");
  $("show-members").setAttribute("aria-expanded", String(open));
}

// ---------------------------------------------------------------- start

/** Earlier versions kept an exported private key in localStorage; nothing uses it now. */
function forgetOldPrivateKeys() {
  for (const key of Object.keys(localStorage)) {
    if (key.startsWith("ilo.privateKey.")) localStorage.removeItem(key);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  forgetOldPrivateKeys();
  $("auth-form").addEventListener("submit", onAuthSubmit);
  $("password").addEventListener("input", () => checkPasswordRules(false));
  $("key-form").addEventListener("submit", onNewKey);
  $("key-cancel").addEventListener("click", logout);
  $("join-form").addEventListener("submit", onJoin);
  $("send-form").addEventListener("submit", onSend);
  $("message").addEventListener("keydown", onComposerKey);
  $("message").addEventListener("input", () => { fitComposer(); $("send-error").textContent = ""; });
  $("room-name").addEventListener("input", () => { $("room-error").textContent = ""; });
  for (const id of ["username", "password"]) $(id).addEventListener("input", clearAuthErrors);
  $("logs").addEventListener("scroll", () => {
    chat.following = isAtBottom();
    if (chat.following) scrollToBottom();
  });
  // A smaller window (a phone turned, a keyboard opening) keeps the newest message in view.
  new ResizeObserver(() => { if (chat.following) scrollToBottom(); }).observe($("logs"));
  $("new-messages").addEventListener("click", scrollToBottom);
  $("show-members").addEventListener("click", toggleMembers);
  document.addEventListener("visibilitychange", () => { if (chat.active) markRead(chat.active); });
  $("leave").addEventListener("click", onLeave);
  $("logout").addEventListener("click", logout);
  $("account").addEventListener("click", openAccount);
  $("account-delete").addEventListener("click", deleteAccount);
  $("account-new-key").addEventListener("click", replaceKey);
  $("account-change-password").addEventListener("click", changePassword);
  for (const field of ["account-password", "account-new-password"]) $(field).addEventListener("input", () => { $("account-error").textContent = ""; });
  $("account-close").addEventListener("click", () => $("account-dialog").close());
  $("verify-mark").addEventListener("click", () => onVerifyDecision(false));
  $("verify-accept").addEventListener("click", () => onVerifyDecision(true));
  $("verify-close").addEventListener("click", () => $("verify-dialog").close());
  if (!sessionExpired()) enterChat();
  else $("username").focus();
});
