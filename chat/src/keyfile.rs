//! Where ilo-chat keeps a user's private keys and the keys it knows of others.
//!
//! The key file is JSON with the X25519 private key and the Ed25519 seed (base64), created with
//! mode 0600 in a 0700 directory; a key file that others can read is refused, as ssh refuses
//! such an identity. By default it lives under the user's config directory, one per server and
//! user: `~/.config/ilo/keys/<server>/<user>.key`. Known keys (trust on first use) are kept
//! beside it, in `<user>.known.json`.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ilo_client::keyring::Keyring;
use ilo_e2e::Keys;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct KeyFile {
    /// `ilo-e2e/1`.
    suite: String,
    user: String,
    x25519_secret: String,
    ed25519_seed: String,
}

const SUITE: &str = "ilo-e2e/1";

/// `~/.config/ilo/keys/<server>/<user>.key`, with both names made safe as file names.
pub fn default_path(server: &str, user: &str) -> anyhow::Result<PathBuf> {
    let base = dirs::config_dir().context("no config directory: pass --key-file")?;
    let server = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .trim_end_matches('/');
    Ok(base
        .join("ilo")
        .join("keys")
        .join(file_name(server))
        .join(format!("{}.key", file_name(user))))
}

/// Letters, digits, `-`, `_` and `.` stay; every other byte becomes `%XX`.
fn file_name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || matches!(c, '-' | '_') || (c == '.' && !out.is_empty()) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            c.encode_utf8(&mut buf)
                .bytes()
                .for_each(|b| out.push_str(&format!("%{b:02X}")));
        }
    }
    out
}

/// The keys in `path`; refused when the file can be read by anyone but its owner.
pub fn load(path: &Path, user: &str) -> anyhow::Result<Keys> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the key file {} can be read by others (mode {:o}); it holds your private keys: \
         chmod 600 it, or create new keys with --new-key",
        path.display(),
        mode & 0o777
    );
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an ilo-chat key file", path.display()))?;
    anyhow::ensure!(
        file.suite == SUITE,
        "{} holds keys of {}, not {SUITE}",
        path.display(),
        file.suite
    );
    anyhow::ensure!(
        file.user == user,
        "{} holds the keys of {}, not {user}",
        path.display(),
        file.user
    );
    let secret = |b64: &str| -> anyhow::Result<[u8; 32]> {
        let bytes = STANDARD.decode(b64)?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("a key is not 32 bytes"))
    };
    let keys = Keys::from_secrets(&secret(&file.x25519_secret)?, &secret(&file.ed25519_seed)?)
        .with_context(|| format!("{} holds an invalid key", path.display()))?;
    Ok(keys)
}

/// Writes `keys` to `path` (mode 0600, its directory 0700). With `replace` false an existing
/// file is never overwritten; with it, the new file takes the old one's place in one rename.
pub fn save(path: &Path, user: &str, keys: &Keys, replace: bool) -> anyhow::Result<()> {
    let (x, ed) = keys.secrets();
    let file = KeyFile {
        suite: SUITE.into(),
        user: user.into(),
        x25519_secret: STANDARD.encode(&x[..]),
        ed25519_seed: STANDARD.encode(&ed[..]),
    };
    let text = serde_json::to_string_pretty(&file)?;
    write_private(path, text.as_bytes(), replace)
        .with_context(|| format!("cannot write the key file {}", path.display()))
}

/// Known keys of others, beside the key file; empty when there is none yet.
pub fn load_known(key_file: &Path) -> anyhow::Result<Keyring> {
    let path = known_path(key_file);
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a list of known keys", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Keyring::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn save_known(key_file: &Path, keyring: &Keyring) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(keyring)?;
    let path = known_path(key_file);
    write_private(&path, text.as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn known_path(key_file: &Path) -> PathBuf {
    key_file.with_extension("known.json")
}

/// Creates the directory (0700) and writes the file with mode 0600 from the start, never
/// readable by others even for a moment.
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let target = if replace {
        path.with_extension("tmp")
    } else {
        path.to_owned()
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(!replace)
        .create(replace)
        .truncate(replace)
        .mode(0o600)
        .open(&target)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if replace {
        fs::rename(&target, path)?;
    }
    Ok(())
}

/// Removes a key file written for an account that could not be created.
pub fn discard(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_file_names() {
        assert_eq!(file_name("127.0.0.1:8080"), "127.0.0.1%3A8080");
        assert_eq!(file_name("cookielover57🍪"), "cookielover57%F0%9F%8D%AA");
        assert_eq!(file_name("../x"), "%2E.%2Fx");
    }
}
