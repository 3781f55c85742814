// HPKE (RFC 9180) base mode, single shot, for one suite: DHKEM(X25519, HKDF-SHA256) (0x0020),
// HKDF-SHA256 (0x0001), AES-128-GCM (0x0001). Built on WebCrypto's primitives alone (X25519,
// HMAC-SHA256, AES-GCM): no third-party cryptography. RFC 9180's vector A.1.1 is its test
// (tests/browser.rs runs `selfTest`).

const subtle = crypto.subtle;
const utf8 = new TextEncoder();

const KEM_SUITE = concat(utf8.encode("KEM"), u16(0x0020));
const HPKE_SUITE = concat(utf8.encode("HPKE"), u16(0x0020), u16(0x0001), u16(0x0001));
const VERSION = utf8.encode("HPKE-v1");
const ZERO_SALT = new Uint8Array(32); // HKDF's salt when none is given: HashLen zeros

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function u16(n) { return new Uint8Array([n >> 8, n & 0xff]); }

async function hmac(key, data) {
  const k = await subtle.importKey("raw", key.length ? key : ZERO_SALT, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

// HKDF-Extract and a one-block HKDF-Expand (every length used here is at most 32 bytes).
const extract = (salt, ikm) => hmac(salt, ikm);
async function expand(prk, info, length) {
  return (await hmac(prk, concat(info, new Uint8Array([1])))).slice(0, length);
}

const labeledExtract = (suite, salt, label, ikm) =>
  extract(salt, concat(VERSION, suite, utf8.encode(label), ikm));
const labeledExpand = (suite, prk, label, info, length) =>
  expand(prk, concat(u16(length), VERSION, suite, utf8.encode(label), info), length);

async function dh(privateKey, publicRaw) {
  const pub = await subtle.importKey("raw", publicRaw, { name: "X25519" }, false, []);
  return new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, privateKey, 256));
}

async function sharedSecret(dhBytes, enc, pkRm) {
  const prk = await labeledExtract(KEM_SUITE, new Uint8Array(), "eae_prk", dhBytes);
  return labeledExpand(KEM_SUITE, prk, "shared_secret", concat(enc, pkRm), 32);
}

/** The base-mode key schedule: the AES key and nonce of sequence number 0. */
let pskIdHash; // the same for every message: base mode has no PSK

/** The key schedule's context for `info`: the same for every recipient of one message. */
async function scheduleContext(info) {
  const empty = new Uint8Array();
  pskIdHash ||= await labeledExtract(HPKE_SUITE, empty, "psk_id_hash", empty);
  const infoHash = await labeledExtract(HPKE_SUITE, empty, "info_hash", info);
  return concat(new Uint8Array([0]), pskIdHash, infoHash);
}

async function keySchedule(shared, context) {
  const empty = new Uint8Array();
  const secret = await labeledExtract(HPKE_SUITE, shared, "secret", empty);
  const [key, nonce] = await Promise.all([
    labeledExpand(HPKE_SUITE, secret, "key", context, 16),
    labeledExpand(HPKE_SUITE, secret, "base_nonce", context, 12),
  ]);
  return { key: await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]), nonce };
}

/** SealBase(pkR, info, aad, pt) for many recipients of one `info`: a function of
 *  `(pkR, aad, pt, ephemeral)` giving `{enc, ct}`. `ephemeral` (a CryptoKeyPair) is for tests. */
export async function sealer(info) {
  const context = await scheduleContext(info);
  return (pkR, aad, pt, ephemeral) => sealWith(context, pkR, aad, pt, ephemeral);
}

async function sealWith(context, pkR, aad, pt, ephemeral) {
  const pair = ephemeral || await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const enc = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
  const shared = await sharedSecret(await dh(pair.privateKey, pkR), enc, pkR);
  const { key, nonce } = await keySchedule(shared, context);
  const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, key, pt));
  return { enc, ct };
}

/** OpenBase(enc, skR, info, aad, ct): the plaintext; throws when it does not open. */
export async function open(enc, skR, pkRm, info, aad, ct) {
  const shared = await sharedSecret(await dh(skR, enc), enc, pkRm);
  const { key, nonce } = await keySchedule(shared, await scheduleContext(info));
  return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, key, ct));
}

export const hex = {
  from: (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16))),
  to: (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(""),
};

/** An X25519 private key from its 32 raw bytes (PKCS #8 wrapping), for tests and vectors. */
export function importX25519Private(raw, extractable = false) {
  const pkcs8 = concat(hex.from("302e020100300506032b656e04220420"), raw);
  return subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, extractable, ["deriveBits"]);
}

/** RFC 9180, A.1.1 (base mode, sequence number 0): both sides. True when every value matches. */
export async function selfTest() {
  const v = {
    info: "4f6465206f6e2061204772656369616e2055726e",
    skEm: "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    pkEm: "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    skRm: "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    pkRm: "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    pt: "4265617574792069732074727574682c20747275746820626561757479",
    aad: "436f756e742d30",
    ct: "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
  };
  const skE = await importX25519Private(hex.from(v.skEm));
  const pkE = await subtle.importKey("raw", hex.from(v.pkEm), { name: "X25519" }, true, []);
  const seal = await sealer(hex.from(v.info));
  const sealed = await seal(hex.from(v.pkRm), hex.from(v.aad), hex.from(v.pt), { privateKey: skE, publicKey: pkE });
  const skR = await importX25519Private(hex.from(v.skRm));
  const opened = await open(hex.from(v.pkEm), skR, hex.from(v.pkRm), hex.from(v.info), hex.from(v.aad), hex.from(v.ct));
  return hex.to(sealed.enc) === v.pkEm && hex.to(sealed.ct) === v.ct && hex.to(opened) === v.pt;
}
