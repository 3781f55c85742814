//! The envelope: the `body` of a `send` frame, sealed for the room's members (`e2e.md`).
//!
//! ```text
//! E = 0x01 ‖ kid(sender) 8 ‖ mid 16 ‖ ts u64 ‖ n u16 ‖ n × (kid 8 ‖ enc 32 ‖ wrapped 32)
//!     ‖ nonce 12 ‖ ct (AES-128-GCM, tag included) ‖ sig 64
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _};
use hpke::aead::AesGcm128;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Bundle, E2eError, Keys, Kid, lp};

/// What starts every encrypted body; a body without it is plaintext.
pub const PREFIX: &str = "e2e1.";
const VERSION: u8 = 1;
const CONTEXT: &[u8] = b"ilo-e2e/1";
const CEK_INFO: &[u8] = b"ilo-e2e/1 cek";
/// Version, sender kid, mid, ts: the part of `E` that `H` covers.
const HEAD: usize = 1 + 8 + 16 + 8;
const RECORD: usize = 8 + 32 + 32;
const NONCE: usize = 12;
const TAG: usize = 16;
const SIG: usize = 64;
/// `E` without records and plaintext: 127 bytes.
const FIXED: usize = HEAD + 2 + NONCE + TAG + SIG;

/// A `message` frame's body, as a reader first sees it.
#[derive(Debug)]
pub enum Body<'a> {
    /// No `e2e1.` prefix: the sender did not encrypt it.
    Plain(&'a str),
    Sealed(Envelope),
}

impl<'a> Body<'a> {
    /// Decodes the envelope's layout (not its cryptography): [`E2eError::Format`] when the
    /// version or the lengths are wrong.
    pub fn parse(body: &'a str) -> Result<Self, E2eError> {
        match body.strip_prefix(PREFIX) {
            None => Ok(Self::Plain(body)),
            Some(encoded) => Envelope::decode(encoded).map(Self::Sealed),
        }
    }
}

/// A well-formed envelope, not yet verified or opened.
#[derive(Debug, Clone)]
pub struct Envelope {
    bytes: Vec<u8>,
    recipients: usize,
}

/// A message opened and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub text: String,
    /// The sender's random message id: a reader drops one it has seen in the room.
    pub mid: [u8; 16],
    /// The sender's clock, in milliseconds.
    pub ts: u64,
}

impl Envelope {
    fn decode(encoded: &str) -> Result<Self, E2eError> {
        let config =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let bytes = GeneralPurpose::new(&alphabet::URL_SAFE, config)
            .decode(encoded)
            .map_err(|_| E2eError::Format)?;
        if bytes.len() < FIXED + RECORD || bytes[0] != VERSION {
            return Err(E2eError::Format);
        }
        let recipients = usize::from(u16::from_be_bytes([bytes[HEAD], bytes[HEAD + 1]]));
        if recipients == 0 || bytes.len() < FIXED + recipients * RECORD {
            return Err(E2eError::Format);
        }
        Ok(Self { bytes, recipients })
    }

    pub fn sender_kid(&self) -> Kid {
        Kid(array(&self.bytes[1..9]))
    }

    pub fn mid(&self) -> [u8; 16] {
        array(&self.bytes[9..25])
    }

    pub fn ts(&self) -> u64 {
        u64::from_be_bytes(array(&self.bytes[25..HEAD]))
    }

    /// The kids of the readers it was sealed for.
    pub fn recipients(&self) -> impl Iterator<Item = Kid> + '_ {
        self.records().map(|r| Kid(array(&r[..8])))
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes[HEAD + 2..HEAD + 2 + self.recipients * RECORD].chunks_exact(RECORD)
    }

    /// Verifies the envelope as sent by `from` (whose bundle is `sender`) in `room`, and
    /// decrypts it with `keys`. The checks run in `e2e.md`'s order, so a forgery is called a
    /// forgery even when it was not meant for this reader.
    pub fn open(
        &self,
        keys: &Keys,
        room: &str,
        from: &str,
        sender: &Bundle,
    ) -> Result<Opened, E2eError> {
        if sender.kid() != self.sender_kid() {
            return Err(E2eError::UnknownSenderKey);
        }
        let ctx = context(room, from);
        let (signed, sig) = self.bytes.split_at(self.bytes.len() - SIG);
        let sig = Signature::from_bytes(&array(sig));
        sender
            .signing
            .verify_strict(&[&ctx[..], signed].concat(), &sig)
            .map_err(|_| E2eError::Signature)?;

        let mine = keys.bundle().kid();
        let record = self
            .records()
            .find(|r| r[..8] == mine.0)
            .ok_or(E2eError::NotForYou)?;
        let h = [&ctx[..], &self.bytes[..HEAD]].concat();
        let cek = unwrap_cek(keys, record, &h)?;
        let body = &signed[HEAD + 2 + self.recipients * RECORD..];
        let (nonce, ct) = body.split_at(NONCE);
        let plaintext = Zeroizing::new(
            Aes128Gcm::new_from_slice(&cek[..])
                .map_err(|_| E2eError::Decrypt)?
                .decrypt(
                    &Nonce::from(array::<NONCE>(nonce)),
                    Payload { msg: ct, aad: &h },
                )
                .map_err(|_| E2eError::Decrypt)?,
        );
        Ok(Opened {
            text: text_of(&plaintext)?,
            mid: self.mid(),
            ts: self.ts(),
        })
    }
}

/// `P` is a JSON object with a `"text"` string; other members are for later versions.
fn text_of(plaintext: &[u8]) -> Result<String, E2eError> {
    let value: serde_json::Value =
        serde_json::from_slice(plaintext).map_err(|_| E2eError::Format)?;
    value["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or(E2eError::Format)
}

fn unwrap_cek(keys: &Keys, record: &[u8], h: &[u8]) -> Result<Zeroizing<Vec<u8>>, E2eError> {
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&record[8..40])
        .map_err(|_| E2eError::Decrypt)?;
    let cek = hpke::single_shot_open::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &keys.decryption,
        &enc,
        &cek_info(h),
        &record[40..],
        b"",
    )
    .map_err(|_| E2eError::Decrypt)?;
    Ok(Zeroizing::new(cek))
}

/// `ctx = "ilo-e2e/1" ‖ lp(room) ‖ lp(from)`.
fn context(room: &str, from: &str) -> Vec<u8> {
    let mut ctx = CONTEXT.to_vec();
    lp(&mut ctx, room);
    lp(&mut ctx, from);
    ctx
}

fn cek_info(h: &[u8]) -> Vec<u8> {
    [CEK_INFO, &Sha256::digest(h)[..]].concat()
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

fn plaintext_of(text: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(serde_json::json!({ "text": text }).to_string().into_bytes())
}

/// Below this many recipients, wrapping the content key on one thread is quicker than
/// starting others.
const PARALLEL_FROM: usize = 16;

/// One record per reader: `kid ‖ enc ‖ wrapped`, the content key sealed to the reader's X25519
/// key with HPKE. Nearly all of a seal's time is these X25519 operations (two per reader), so a
/// large room's records are made on every core.
fn wrap_for(readers: &[(Kid, &Bundle)], info: &[u8], cek: &[u8]) -> Result<Vec<u8>, E2eError> {
    let wrap = |records: &[(Kid, &Bundle)]| -> Result<Vec<u8>, E2eError> {
        let mut out = Vec::with_capacity(records.len() * RECORD);
        for (kid, reader) in records {
            let (enc, wrapped) = hpke::single_shot_seal::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &reader.encryption,
                info,
                cek,
                b"",
            )
            .map_err(|_| E2eError::Recipients)?;
            out.extend_from_slice(&kid.0);
            out.extend_from_slice(&enc.to_bytes());
            out.extend_from_slice(&wrapped);
        }
        Ok(out)
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if readers.len() < PARALLEL_FROM || cores < 2 {
        return wrap(readers);
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = readers
            .chunks(readers.len().div_ceil(cores))
            .map(|part| scope.spawn(move || wrap(part)))
            .collect();
        let mut out = Vec::with_capacity(readers.len() * RECORD);
        for part in parts {
            out.extend(part.join().map_err(|_| E2eError::Recipients)??);
        }
        Ok(out)
    })
}

/// The exact length of the body [`seal`] makes of `text` for `recipients` readers: what a
/// client checks against the relay's `body` limit before sending.
pub fn body_len(recipients: usize, text: &str) -> usize {
    let e = FIXED + recipients * RECORD + plaintext_of(text).len();
    PREFIX.len() + (e * 4).div_ceil(3)
}

/// Seals `text`, sent by `from` (the sender's own name as the relay gives it) in `room`, for
/// `recipients`: every member whose bundle the sender knows, the sender included so that its
/// own echo opens. A bundle listed twice gets one record.
pub fn seal<'b>(
    keys: &Keys,
    room: &str,
    from: &str,
    text: &str,
    recipients: impl IntoIterator<Item = &'b Bundle>,
) -> Result<String, E2eError> {
    let mut readers: Vec<(Kid, &Bundle)> = Vec::new();
    for bundle in recipients {
        let kid = bundle.kid();
        if !readers.iter().any(|(k, _)| *k == kid) {
            readers.push((kid, bundle));
        }
    }
    let count = u16::try_from(readers.len()).map_err(|_| E2eError::Recipients)?;
    if count == 0 {
        return Err(E2eError::Recipients);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let plaintext = plaintext_of(text);

    let mut e = Vec::with_capacity(FIXED + readers.len() * RECORD + plaintext.len());
    e.push(VERSION);
    e.extend_from_slice(&keys.bundle().kid().0);
    e.extend_from_slice(&crate::random::<16>());
    e.extend_from_slice(&now.to_be_bytes());
    let ctx = context(room, from);
    let h = [&ctx[..], &e[..]].concat();

    e.extend_from_slice(&count.to_be_bytes());
    let cek = Zeroizing::new(crate::random::<16>());
    e.extend_from_slice(&wrap_for(&readers, &cek_info(&h), &cek[..])?);
    let nonce = crate::random::<NONCE>();
    let ct = Aes128Gcm::new_from_slice(&cek[..])
        .map_err(|_| E2eError::Recipients)?
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &plaintext,
                aad: &h,
            },
        )
        .map_err(|_| E2eError::Recipients)?;
    e.extend_from_slice(&nonce);
    e.extend_from_slice(&ct);
    let sig = keys.signing.sign(&[&ctx[..], &e[..]].concat());
    e.extend_from_slice(&sig.to_bytes());
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&e)))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hpke::Kem as _;
    use hpke::rand_core::{TryCryptoRng, TryRng};

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// Hands out fixed bytes: how the RFC's ephemeral key reaches the sender's side.
    struct Fixed(Vec<u8>);

    impl TryRng for Fixed {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            unreachable!("HPKE asks for bytes")
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            unreachable!("HPKE asks for bytes")
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            let taken: Vec<u8> = self.0.drain(..dst.len()).collect();
            dst.copy_from_slice(&taken);
            Ok(())
        }
    }

    impl TryCryptoRng for Fixed {}

    /// RFC 9180, appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base
    /// mode, the first encryption (sequence number 0), through the HPKE this crate seals with.
    #[test]
    fn the_hpke_in_use_reproduces_rfc_9180_a_1_1() {
        let info = hex("4f6465206f6e2061204772656369616e2055726e");
        let (_, pk_r) = X25519HkdfSha256::derive_keypair(&hex(
            "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
        ));
        let pk_rm = hex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d");
        assert_eq!(pk_r.to_bytes().to_vec(), pk_rm);
        // The RFC prints skRm unclamped; the library keeps it clamped, as X25519 uses it. The
        // same public key and the open below show they are one key.
        let sk_rm = crate::bundle::XPrivate::from_bytes(&hex(
            "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        ))
        .expect("skRm");
        assert_eq!(
            X25519HkdfSha256::sk_to_pk(&sk_rm).to_bytes().to_vec(),
            pk_rm
        );
        let pt = hex("4265617574792069732074727574682c20747275746820626561757479");
        let aad = hex("436f756e742d30");
        let ct = hex(
            "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
        );
        let ikm_e = hex("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234");
        let (enc, sealed) = hpke::single_shot_seal_with_rng::<
            AesGcm128,
            HkdfSha256,
            X25519HkdfSha256,
        >(&OpModeS::Base, &pk_r, &info, &pt, &aad, &mut Fixed(ikm_e))
        .expect("seal");
        assert_eq!(
            enc.to_bytes().to_vec(),
            hex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
        );
        assert_eq!(sealed, ct);
        let opened = hpke::single_shot_open::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk_rm,
            &enc,
            &info,
            &ct,
            &aad,
        )
        .expect("open");
        assert_eq!(opened, pt);
    }

    fn decoded(body: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(body.strip_prefix(PREFIX).expect("prefix"))
            .expect("base64")
    }

    fn open(
        body: &str,
        reader: &Keys,
        room: &str,
        from: &str,
        sender: &Bundle,
    ) -> Result<Opened, E2eError> {
        match Body::parse(body)? {
            Body::Plain(_) => panic!("sealed bodies carry the prefix"),
            Body::Sealed(envelope) => envelope.open(reader, room, from, sender),
        }
    }

    #[test]
    fn a_sealed_message_opens_for_each_recipient_and_no_one_else() {
        let (alice, bob, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
        let body = seal(
            &alice,
            "lobby",
            "alice",
            "hi\nthere 🍪",
            [alice.bundle(), bob.bundle()],
        )
        .expect("seal");
        assert_eq!(body.len(), body_len(2, "hi\nthere 🍪"));
        for reader in [&alice, &bob] {
            let opened = open(&body, reader, "lobby", "alice", alice.bundle()).expect("opens");
            assert_eq!(opened.text, "hi\nthere 🍪");
        }
        assert_eq!(
            open(&body, &carol, "lobby", "alice", alice.bundle()),
            Err(E2eError::NotForYou)
        );
        assert_eq!(
            open(&body, &bob, "lobby", "carol", carol.bundle()),
            Err(E2eError::UnknownSenderKey)
        );
        assert_eq!(
            open(&body, &bob, "kitchen", "alice", alice.bundle()),
            Err(E2eError::Signature)
        );
    }

    #[test]
    fn a_large_room_sealed_on_several_threads_opens_for_everyone_in_order() {
        let readers: Vec<Keys> = (0..PARALLEL_FROM + 5).map(|_| Keys::generate()).collect();
        let body = seal(
            &readers[0],
            "hall",
            "first",
            "to all",
            readers.iter().map(Keys::bundle),
        )
        .expect("seal");
        let Body::Sealed(envelope) = Body::parse(&body).expect("parse") else {
            panic!("sealed");
        };
        let kids: Vec<Kid> = envelope.recipients().collect();
        let expected: Vec<Kid> = readers.iter().map(|k| k.bundle().kid()).collect();
        assert_eq!(kids, expected, "one record per reader, in the order given");
        for reader in &readers {
            let opened = envelope.open(reader, "hall", "first", readers[0].bundle());
            assert_eq!(opened.expect("opens").text, "to all");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let (alice, bob) = (Keys::generate(), Keys::generate());
        let body = seal(
            &alice,
            "lobby",
            "alice",
            "secret",
            [alice.bundle(), bob.bundle()],
        )
        .expect("seal");
        let bytes = decoded(&body);
        for at in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[at] ^= 0x01;
            let altered = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&altered));
            assert!(
                open(&altered, &bob, "lobby", "alice", alice.bundle()).is_err(),
                "a flipped bit at byte {at} of {} was accepted",
                bytes.len()
            );
        }
        let cut = format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1])
        );
        assert!(open(&cut, &bob, "lobby", "alice", alice.bundle()).is_err());
    }

    #[test]
    fn bodies_that_are_not_envelopes_are_told_apart() {
        assert!(matches!(Body::parse("hello"), Ok(Body::Plain("hello"))));
        assert_eq!(Body::parse("e2e1.!!").err(), Some(E2eError::Format));
        assert_eq!(Body::parse("e2e1.AQ").err(), Some(E2eError::Format));
        let mut no_recipients = vec![VERSION];
        no_recipients.resize(FIXED + RECORD, 0);
        let body = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&no_recipients));
        assert_eq!(Body::parse(&body).err(), Some(E2eError::Format));
    }

    #[test]
    fn nobody_to_seal_for_is_an_error() {
        let alice = Keys::generate();
        assert_eq!(
            seal(&alice, "lobby", "alice", "x", []),
            Err(E2eError::Recipients)
        );
    }
}
