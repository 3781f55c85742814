// ilo-e2e/1 (e2e.md) on WebCrypto: key bundles, envelopes sealed for a room's members, and
// safety numbers. The bytes are those of the Rust crate `ilo-e2e`, checked against the same
// vectors (tests/browser.rs).

import * as hpke from "./hpke.js";

const subtle = crypto.subtle;
const utf8 = new TextEncoder();
const { concat } = hpke;

export const PREFIX = "e2e1.";
const VERSION = 1;
const HEAD = 1 + 8 + 16 + 8; // version, sender kid, mid, ts
const RECORD = 8 + 32 + 32; // kid, enc, wrapped key
const FIXED = HEAD + 2 + 12 + 16 + 64; // 127: E without records and plaintext
const CONTEXT = utf8.encode("ilo-e2e/1");
const CEK_INFO = utf8.encode("ilo-e2e/1 cek");

/** Why a message did not open; `kind` is one word, as ilo-chat prints it. */
export class E2eError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}
const refuse = (kind, message) => { throw new E2eError(kind, message); };

// ---------------------------------------------------------------- encodings

export function base64url(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Any base64 form the API accepts (standard or URL-safe, padding optional); null if none. */
export function unbase64(text) {
  try {
    const standard = text.trim().replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
    if (/[^A-Za-z0-9+/]/.test(standard) || standard.length % 4 === 1) return null;
    const binary = atob(standard.padEnd(standard.length + ((4 - (standard.length % 4)) % 4), "="));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

function lp(text) {
  const bytes = utf8.encode(text);
  return concat(new Uint8Array([bytes.length >> 8, bytes.length & 0xff]), bytes);
}

const context = (room, from) => concat(CONTEXT, lp(room), lp(from));
const sha256 = async (bytes) => new Uint8Array(await subtle.digest("SHA-256", bytes));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// ---------------------------------------------------------------- keys

/** A registered `public_key` as a bundle `{bytes, x, ed}`, or null: "this user has no E2E key". */
export function parseBundle(publicKey) {
  const bytes = publicKey && unbase64(publicKey);
  if (!bytes || bytes.length !== 65 || bytes[0] !== 1) return null;
  return { bytes, x: bytes.subarray(1, 33), ed: bytes.subarray(33) };
}

const kids = new WeakMap(); // bundle -> its kid: computed once per bundle seen

export function kid(bundle) {
  if (!kids.has(bundle)) kids.set(bundle, sha256(bundle.bytes).then((d) => d.subarray(0, 8)));
  return kids.get(bundle);
}

/** New key pairs whose private halves cannot be exported; `{x, ed, bundle}`, storable in IndexedDB. */
export async function generateKeys() {
  const x = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const ed = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const bytes = concat(new Uint8Array([1]),
    new Uint8Array(await subtle.exportKey("raw", x.publicKey)),
    new Uint8Array(await subtle.exportKey("raw", ed.publicKey)));
  return { x: x.privateKey, ed: ed.privateKey, bundle: base64url(bytes) };
}

// ---------------------------------------------------------------- sealing

/** The exact length of the body `seal` makes of `text` for `recipients` readers. */
export function bodyLen(recipients, text) {
  const e = FIXED + recipients * RECORD + utf8.encode(JSON.stringify({ text })).length;
  return PREFIX.length + Math.ceil((e * 4) / 3);
}

/** Seals `text`, sent by `from` in `room`, for `recipients` (bundles; the sender's own among them). */
export async function seal(keys, room, from, text, recipients) {
  const own = parseBundle(keys.bundle);
  const ctx = context(room, from);
  const head = new Uint8Array(HEAD);
  head[0] = VERSION;
  head.set(await kid(own), 1);
  head.set(crypto.getRandomValues(new Uint8Array(16)), 9);
  new DataView(head.buffer).setBigUint64(25, BigInt(Date.now()));
  const h = concat(ctx, head);
  const cek = crypto.getRandomValues(new Uint8Array(16));
  const wrap = await hpke.sealer(concat(CEK_INFO, await sha256(h)));
  const records = await Promise.all(recipients.map(async (bundle) => {
    const { enc, ct } = await wrap(bundle.x, new Uint8Array(), cek);
    return concat(await kid(bundle), enc, ct);
  }));
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const aes = await subtle.importKey("raw", cek, "AES-GCM", false, ["encrypt"]);
  const plaintext = utf8.encode(JSON.stringify({ text }));
  const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: h }, aes, plaintext));
  const count = new Uint8Array([records.length >> 8, records.length & 0xff]);
  const unsigned = concat(head, count, ...records, nonce, ct);
  const sig = new Uint8Array(await subtle.sign("Ed25519", keys.ed, concat(ctx, unsigned)));
  return PREFIX + base64url(concat(unsigned, sig));
}

// ---------------------------------------------------------------- opening

/** `{plain: text}` for a body without the prefix, else the envelope's layout; throws `format`. */
export function parse(body) {
  if (!body.startsWith(PREFIX)) return { plain: body };
  const bytes = unbase64(body.slice(PREFIX.length));
  if (!bytes || bytes.length < FIXED + RECORD || bytes[0] !== VERSION) refuse("format", "not an ilo-e2e/1 envelope");
  const n = (bytes[HEAD] << 8) | bytes[HEAD + 1];
  if (n === 0 || bytes.length < FIXED + n * RECORD) refuse("format", "not an ilo-e2e/1 envelope");
  return {
    envelope: {
      bytes, n,
      senderKid: bytes.subarray(1, 9),
      mid: hpke.hex.to(bytes.subarray(9, 25)),
      ts: Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(25)),
    },
  };
}

/** Verifies an envelope from `from` (bundle `sender`) in `room` and opens it with `keys`, in the
 *  order e2e.md gives; `{text, mid, ts}`, or throws an E2eError. */
export async function open(keys, room, from, envelope, sender) {
  const { bytes, n } = envelope;
  if (!sender || !equal(await kid(sender), envelope.senderKid)) refuse("unknown_key", "signed with a key the sender does not hold");
  const ctx = context(room, from);
  const signed = bytes.subarray(0, bytes.length - 64);
  const edKey = await subtle.importKey("raw", sender.ed, { name: "Ed25519" }, false, ["verify"]);
  const valid = await subtle.verify("Ed25519", edKey, bytes.subarray(bytes.length - 64), concat(ctx, signed));
  if (!valid) refuse("signature", "could not be verified");

  const mine = await kid(parseBundle(keys.bundle));
  let record = null;
  for (let i = 0; i < n && !record; i++) {
    const at = HEAD + 2 + i * RECORD;
    if (equal(bytes.subarray(at, at + 8), mine)) record = bytes.subarray(at, at + RECORD);
  }
  if (!record) refuse("not_for_you", "not encrypted for you");
  const h = concat(ctx, bytes.subarray(0, HEAD));
  const info = concat(CEK_INFO, await sha256(h));
  try {
    const cek = await hpke.open(record.subarray(8, 40), keys.x, parseBundle(keys.bundle).x, info, new Uint8Array(), record.subarray(40));
    const aes = await subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]);
    const body = signed.subarray(HEAD + 2 + n * RECORD);
    const plaintext = await subtle.decrypt({ name: "AES-GCM", iv: body.subarray(0, 12), additionalData: h }, aes, body.subarray(12));
    const text = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext)).text;
    if (typeof text !== "string") refuse("format", "no text");
    return { text, mid: envelope.mid, ts: envelope.ts };
  } catch (e) {
    if (e instanceof E2eError) throw e;
    refuse("decrypt", "could not be decrypted");
  }
}

// ---------------------------------------------------------------- safety numbers

/** 30 digits: SHA-256("ilo-fp/1" ‖ lp(username) ‖ bundle), six 5-byte chunks mod 100000. */
export async function fingerprint(username, bundle) {
  const d = await sha256(concat(utf8.encode("ilo-fp/1"), lp(username), bundle.bytes));
  let digits = "";
  for (let i = 0; i < 30; i += 5) {
    const value = d.subarray(i, i + 5).reduce((n, b) => n * 256 + b, 0);
    digits += String(value % 100000).padStart(5, "0");
  }
  return digits;
}

/** Both fingerprints, the smaller first: the same 60 digits on both sides. */
export async function safetyNumber(a, aBundle, b, bBundle) {
  const [x, y] = [await fingerprint(a, aBundle), await fingerprint(b, bBundle)];
  return x <= y ? x + y : y + x;
}

/** `54099 34183 …`: as people read it aloud. */
export const grouped = (digits) => digits.match(/.{1,5}/g).join(" ");
