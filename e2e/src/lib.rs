//! ilo-e2e/1 (`e2e.md`): Ilo's end-to-end encryption, with no I/O. A user's [`Keys`] and the
//! public [`Bundle`] everyone else knows them by; [`seal`] turns a text into a `send` body for a
//! room's members and [`Envelope::open`] turns it back, refusing what was altered, forged, moved
//! to another room or sender, or not encrypted for this reader; [`safety`] gives the numbers
//! two people compare to verify each other.
//!
//! Every primitive comes from RustCrypto: HPKE base mode (`hpke`: DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-128-GCM) wraps a per-message content key for each recipient, `aes-gcm`
//! encrypts the text once, `ed25519-dalek` signs the whole envelope.

mod bundle;
mod envelope;
pub mod safety;

pub use bundle::{Bundle, Keys, Kid};
pub use envelope::{Body, Envelope, Opened, PREFIX, body_len, seal};

/// Why a body could not be opened. [`E2eError::kind`] names each in one word for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// Not an ilo-e2e/1 envelope: bad base64, wrong version, lengths that do not add up.
    #[error("the message is not a well-formed ilo-e2e/1 envelope")]
    Format,
    /// The envelope names a sender key that is not the sender's current bundle.
    #[error("the message was signed with a key the sender does not hold now")]
    UnknownSenderKey,
    /// The signature does not cover these bytes, this room and this sender.
    #[error("the message could not be verified")]
    Signature,
    /// No record for this reader: it was sent before the reader joined, or to another key.
    #[error("the message was not encrypted for you")]
    NotForYou,
    /// The reader's record or the ciphertext does not decrypt.
    #[error("the message could not be decrypted")]
    Decrypt,
    /// Sealing for nobody, for more recipients than an envelope can name, or for a key no
    /// message can be sealed to.
    #[error("a message needs 1 to 65535 recipients with usable keys")]
    Recipients,
}

impl E2eError {
    /// `format`, `unknown_key`, `signature`, `not_for_you`, `decrypt`, `recipients`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::UnknownSenderKey => "unknown_key",
            Self::Signature => "signature",
            Self::NotForYou => "not_for_you",
            Self::Decrypt => "decrypt",
            Self::Recipients => "recipients",
        }
    }
}

/// `lp(s)`: a string's UTF-8 bytes after their length as a big-endian u16. Room names and
/// usernames are far below 65535 bytes; a longer string is cut there, which cannot collide
/// with any real name.
fn lp(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The operating system's generator failing is not something a chat can recover from.
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}
