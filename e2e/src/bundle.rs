//! A user's two key pairs ([`Keys`]) and the public [`Bundle`] registered as `public_key`:
//! `0x01 ‖ X25519 public key ‖ Ed25519 public key`, 65 bytes, base64url without padding.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, VerifyingKey};
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub(crate) type XPrivate = <X25519HkdfSha256 as hpke::Kem>::PrivateKey;
pub(crate) type XPublic = <X25519HkdfSha256 as hpke::Kem>::PublicKey;

const BUNDLE_VERSION: u8 = 0x01;
const BUNDLE_LEN: usize = 65;

/// `kid(bundle)`: the first 8 bytes of SHA-256(bundle), how an envelope names a key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kid(pub [u8; 8]);

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A user's public keys as registered: what others encrypt to and verify with.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    bytes: [u8; BUNDLE_LEN],
    pub(crate) encryption: XPublic,
    pub(crate) signing: VerifyingKey,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bundle({:?})", self.kid())
    }
}

impl Bundle {
    /// The bundle in a `public_key` as the API returns it, in any base64 form the API accepts;
    /// `None` for anything else, which means "this user has no E2E key".
    pub fn parse(public_key: &str) -> Option<Self> {
        let bytes = decode_base64(public_key.trim())?;
        let bytes: [u8; BUNDLE_LEN] = bytes.try_into().ok()?;
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; BUNDLE_LEN]) -> Option<Self> {
        if bytes[0] != BUNDLE_VERSION {
            return None;
        }
        let encryption = XPublic::from_bytes(&bytes[1..33]).ok()?;
        let signing = VerifyingKey::from_bytes(bytes[33..].try_into().ok()?).ok()?;
        Some(Self {
            bytes,
            encryption,
            signing,
        })
    }

    /// base64url without padding: what `POST /user` and `PUT /user/public_key` take.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn kid(&self) -> Kid {
        let digest = Sha256::digest(self.bytes);
        let mut kid = [0u8; 8];
        kid.copy_from_slice(&digest[..8]);
        Kid(kid)
    }
}

/// Standard or URL-safe alphabet, padding optional: the forms `api.md` accepts.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [alphabet::STANDARD, alphabet::URL_SAFE]
        .iter()
        .find_map(|a| GeneralPurpose::new(a, config).decode(text).ok())
}

/// A user's private keys; they never leave the device.
pub struct Keys {
    pub(crate) decryption: XPrivate,
    pub(crate) signing: SigningKey,
    bundle: Bundle,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({:?}, private keys hidden)", self.bundle.kid())
    }
}

impl Keys {
    /// Fresh key pairs from the operating system's generator.
    pub fn generate() -> Self {
        let (decryption, _) = X25519HkdfSha256::gen_keypair();
        let seed = Zeroizing::new(crate::random::<32>());
        Self::from_parts(decryption, SigningKey::from_bytes(&seed))
    }

    /// The keys from their secrets: the X25519 private key and the Ed25519 seed, as
    /// [`Keys::secrets`] gives them (and as the test vectors list them).
    pub fn from_secrets(x25519: &[u8; 32], ed25519_seed: &[u8; 32]) -> Option<Self> {
        let decryption = XPrivate::from_bytes(x25519).ok()?;
        Some(Self::from_parts(
            decryption,
            SigningKey::from_bytes(ed25519_seed),
        ))
    }

    fn from_parts(decryption: XPrivate, signing: SigningKey) -> Self {
        let mut bytes = [0u8; BUNDLE_LEN];
        bytes[0] = BUNDLE_VERSION;
        let encryption = X25519HkdfSha256::sk_to_pk(&decryption);
        bytes[1..33].copy_from_slice(&encryption.to_bytes());
        let verifying = signing.verifying_key();
        bytes[33..].copy_from_slice(verifying.as_bytes());
        let bundle = Bundle {
            bytes,
            encryption,
            signing: verifying,
        };
        Self {
            decryption,
            signing,
            bundle,
        }
    }

    /// The X25519 private key and the Ed25519 seed, for a key file. Wiped when dropped.
    pub fn secrets(&self) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
        let mut x25519 = Zeroizing::new([0u8; 32]);
        x25519.copy_from_slice(&self.decryption.to_bytes());
        (x25519, Zeroizing::new(self.signing.to_bytes()))
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_round_trips_through_its_encoding() {
        let keys = Keys::generate();
        let encoded = keys.bundle().encode();
        assert_eq!(encoded.len(), 87);
        assert_eq!(Bundle::parse(&encoded).as_ref(), Some(keys.bundle()));
        let (x, ed) = keys.secrets();
        let again = Keys::from_secrets(&x, &ed).expect("valid secrets");
        assert_eq!(again.bundle(), keys.bundle());
    }

    #[test]
    fn keys_that_are_not_bundles_are_refused() {
        let mut other_version = [0u8; BUNDLE_LEN];
        other_version[0] = 2;
        assert!(Bundle::parse(&URL_SAFE_NO_PAD.encode(other_version)).is_none());
        assert!(Bundle::parse(&URL_SAFE_NO_PAD.encode([1u8; 32])).is_none());
        assert!(Bundle::parse("not base64!").is_none());
    }
}
