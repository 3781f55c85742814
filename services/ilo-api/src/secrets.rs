//! Session tokens and API keys: how they are made and the only form in which they are stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Random bytes in a session token: 256 bits, well above the contract's 128.
const TOKEN_BYTES: usize = 32;

/// A new session token: URL-safe base64 without padding, so it can travel as a WebSocket
/// subprotocol (`bearer.<token>`).
pub(crate) fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new API key: a random (v4) UUID.
pub(crate) fn new_api_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The canonical form of an API key, or `None` when it cannot be one we issued.
pub(crate) fn canonical_api_key(raw: &str) -> Option<String> {
    uuid::Uuid::parse_str(raw.trim())
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The digest of an API key as the database keeps it, or `None` when `raw` cannot be a key.
pub(crate) fn api_key_digest(raw: &str) -> Option<String> {
    canonical_api_key(raw).map(|key| digest(&key))
}

/// What the database keeps of a token or key. Both carry ≥ 122 random bits, so a fast hash is
/// enough: nobody can search that space, and validation stays cheap on the hot path.
pub(crate) fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in hash {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Reads `Authorization: Bearer <token>`.
pub(crate) fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn api_keys_are_canonicalised_before_hashing() {
        let key = new_api_key();
        let upper = key.to_uppercase();
        assert_eq!(canonical_api_key(&upper), Some(key));
        assert_eq!(canonical_api_key("nope"), None);
    }

    #[test]
    fn bearer_header_is_parsed() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
