// Where the page keeps things per server and user: private keys in IndexedDB as
// non-extractable CryptoKeys (the browser stores them; no script, this one included, can read
// their bytes), and the keys it knows of others (trust on first use) in localStorage, which
// holds nothing secret.

const DB = "ilo";
const STORE = "keys";

/** How the server matches names (NFC, ignoring case), so "Alice" finds alice's keys. */
const userKey = (user) => `${location.origin}|${user.normalize("NFC").toLowerCase()}`;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

let db;
async function store(mode) {
  if (!db) {
    const opening = indexedDB.open(DB, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(STORE);
    db = await request(opening);
  }
  return db.transaction(STORE, mode).objectStore(STORE);
}

/** This browser's keys for `user` (`{x, ed, bundle}`), or null. */
export async function loadKeys(user) {
  return (await request((await store("readonly")).get(userKey(user)))) || null;
}

export async function saveKeys(user, keys) {
  await request((await store("readwrite")).put(keys, userKey(user)));
}

// ---------------------------------------------------------------- known keys

/** Trust on first use, for the person logged in as `me`: user -> {bundle, verified, held}. */
export class Known {
  constructor(me) {
    this.slot = `ilo.known.${me.normalize("NFC").toLowerCase()}`;
    this.users = JSON.parse(localStorage.getItem(this.slot) || "{}");
  }

  save() { localStorage.setItem(this.slot, JSON.stringify(this.users)); }

  /** Records `bundle` (encoded) for `user`: "first", "same", "changed", or "held" for a
   *  verified user's new key, which waits for `trust`. */
  saw(user, bundle) {
    const known = this.users[user];
    let seen;
    if (!known) {
      this.users[user] = { bundle, verified: false };
      seen = "first";
    } else if (known.bundle === bundle) {
      delete known.held;
      seen = "same";
    } else if (known.verified) {
      seen = known.held === bundle ? "same" : "held";
      known.held = bundle;
    } else {
      known.bundle = bundle;
      seen = "changed";
    }
    this.save();
    return seen;
  }

  isHeld(user) { return Boolean(this.users[user]?.held); }
  isVerified(user) { return Boolean(this.users[user]?.verified && !this.users[user].held); }

  verify(user) {
    if (!this.users[user] || this.users[user].held) return false;
    this.users[user].verified = true;
    this.save();
    return true;
  }

  /** Accepts a verified user's new key; it is no longer verified. */
  trust(user) {
    const known = this.users[user];
    if (!known?.held) return false;
    this.users[user] = { bundle: known.held, verified: false };
    this.save();
    return true;
  }
}
