//! Fingerprints and safety numbers: what two people compare, out of band, to know that the
//! keys their clients use are each other's (`e2e.md`, "Safety numbers").

use sha2::{Digest, Sha256};

use crate::{Bundle, lp};

/// A user's 30-digit fingerprint: `d = SHA-256("ilo-fp/1" ‖ lp(username) ‖ bundle)`; each of
/// its first six 5-byte chunks, as a big-endian integer mod 100000, gives 5 digits.
pub fn fingerprint(username: &str, bundle: &Bundle) -> String {
    let mut input = b"ilo-fp/1".to_vec();
    lp(&mut input, username);
    input.extend_from_slice(bundle.as_bytes());
    let digest = Sha256::digest(&input);
    digest[..30]
        .chunks_exact(5)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

/// The safety number of two users: their fingerprints, the smaller first (60 digits). Both
/// users get the same number.
pub fn safety_number(a: (&str, &Bundle), b: (&str, &Bundle)) -> String {
    let (x, y) = (fingerprint(a.0, a.1), fingerprint(b.0, b.1));
    if x <= y { x + &y } else { y + &x }
}

/// Digits in groups of five, as people read them aloud: `54099 34183 …`.
pub fn grouped(digits: &str) -> String {
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
