//! `e2e-vectors.json` (a copy of `shared/spec/e2e-vectors.json`, the contract's vectors): every
//! implementation must derive the same bundles, open every message for its readers, refuse
//! every altered one, and compute the same safety numbers.

use ilo_e2e::safety::{fingerprint, safety_number};
use ilo_e2e::{Body, Bundle, E2eError, Keys, Opened};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    users: Vec<User>,
    messages: Vec<Message>,
    refused: Vec<Refused>,
    safety_numbers: Vec<Safety>,
    not_e2e_keys: Vec<String>,
}

#[derive(Deserialize)]
struct User {
    username: String,
    x25519_secret_hex: String,
    ed25519_seed_hex: String,
    bundle_hex: String,
    public_key: String,
    kid_hex: String,
    fingerprint: String,
}

#[derive(Deserialize)]
struct Message {
    room: String,
    from: String,
    body: String,
    text: String,
    mid_hex: String,
    ts: u64,
    readable_by: Vec<String>,
    not_for: Vec<String>,
}

#[derive(Deserialize)]
struct Refused {
    why: String,
    room: String,
    from: String,
    reader: String,
    body: String,
}

#[derive(Deserialize)]
struct Safety {
    users: [String; 2],
    digits: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("e2e-vectors.json")).expect("the vectors parse")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn keys_of(user: &User) -> Keys {
    let x: [u8; 32] = hex(&user.x25519_secret_hex).try_into().expect("32 bytes");
    let ed: [u8; 32] = hex(&user.ed25519_seed_hex).try_into().expect("32 bytes");
    Keys::from_secrets(&x, &ed).expect("valid secrets")
}

fn user<'v>(vectors: &'v Vectors, name: &str) -> &'v User {
    vectors
        .users
        .iter()
        .find(|u| u.username == name)
        .expect("a user of the vectors")
}

/// What a reader does with a frame: parse, take the sender's bundle, open.
fn read(
    vectors: &Vectors,
    reader: &str,
    room: &str,
    from: &str,
    body: &str,
) -> Result<Opened, E2eError> {
    let Body::Sealed(envelope) = Body::parse(body)? else {
        panic!("every vector is sealed");
    };
    let sender = Bundle::parse(&user(vectors, from).public_key).expect("the sender's bundle");
    envelope.open(&keys_of(user(vectors, reader)), room, from, &sender)
}

#[test]
fn every_user_derives_the_listed_bundle_kid_and_fingerprint() {
    let vectors = vectors();
    for user in &vectors.users {
        let keys = keys_of(user);
        assert_eq!(
            to_hex(keys.bundle().as_bytes()),
            user.bundle_hex,
            "{}",
            user.username
        );
        assert_eq!(keys.bundle().encode(), user.public_key, "{}", user.username);
        assert_eq!(
            to_hex(&keys.bundle().kid().0),
            user.kid_hex,
            "{}",
            user.username
        );
        let parsed = Bundle::parse(&user.public_key).expect("the public key is a bundle");
        assert_eq!(&parsed, keys.bundle());
        assert_eq!(
            fingerprint(&user.username, &parsed),
            user.fingerprint,
            "{}",
            user.username
        );
    }
}

#[test]
fn every_message_opens_for_its_readers_and_no_one_else() {
    let vectors = vectors();
    for message in &vectors.messages {
        for reader in &message.readable_by {
            let opened = read(
                &vectors,
                reader,
                &message.room,
                &message.from,
                &message.body,
            )
            .unwrap_or_else(|e| panic!("{reader} cannot open {:?}: {e}", message.text));
            assert_eq!(opened.text, message.text);
            assert_eq!(to_hex(&opened.mid), message.mid_hex);
            assert_eq!(opened.ts, message.ts);
        }
        for reader in &message.not_for {
            assert_eq!(
                read(
                    &vectors,
                    reader,
                    &message.room,
                    &message.from,
                    &message.body
                ),
                Err(E2eError::NotForYou),
                "{reader}"
            );
        }
    }
}

#[test]
fn every_refused_body_is_refused_for_the_right_reason() {
    let vectors = vectors();
    assert!(!vectors.refused.is_empty());
    for refused in &vectors.refused {
        let expected = match refused.why.as_str() {
            "not encrypted for this reader" => E2eError::NotForYou,
            // The reader takes the named sender's bundle, whose kid is not the envelope's.
            "the right bytes shown as sent by another user" => E2eError::UnknownSenderKey,
            // The signature covers every byte of the envelope, the room and the sender.
            _ => E2eError::Signature,
        };
        assert_eq!(
            read(
                &vectors,
                &refused.reader,
                &refused.room,
                &refused.from,
                &refused.body
            ),
            Err(expected),
            "{}",
            refused.why
        );
    }
}

#[test]
fn safety_numbers_are_the_listed_digits_from_both_sides() {
    let vectors = vectors();
    for safety in &vectors.safety_numbers {
        let [a, b] = &safety.users;
        let bundle = |name: &str| Bundle::parse(&user(&vectors, name).public_key).expect("bundle");
        let (ba, bb) = (bundle(a), bundle(b));
        assert_eq!(safety_number((a, &ba), (b, &bb)), safety.digits);
        assert_eq!(safety_number((b, &bb), (a, &ba)), safety.digits);
    }
}

#[test]
fn keys_that_are_not_bundles_mean_no_e2e_key() {
    for key in vectors().not_e2e_keys {
        assert!(Bundle::parse(&key).is_none(), "{key}");
    }
}
