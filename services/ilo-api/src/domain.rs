//! Validated request values. A value of these types obeys every rule of `api.md`; nothing else
//! re-checks them. Parsing does no I/O and collects every broken rule, not only the first.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Username length in characters (Unicode scalar values after NFC).
pub(crate) const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
/// Password length in characters.
pub(crate) const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;
/// Size of a decoded public key in bytes.
pub(crate) const PUBLIC_KEY_BYTES: std::ops::RangeInclusive<usize> = 32..=2048;

/// One broken rule: the field it concerns and a sentence a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Violation {
    pub field: &'static str,
    pub message: String,
    /// Which kind of rule, for the reply's `code`; the message is for people only.
    #[serde(skip)]
    pub kind: Rule,
}

/// The kinds of rule a field can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The field is absent.
    Missing,
    /// The field is there and breaks a rule of its own.
    Broken,
}

impl Violation {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            kind: Rule::Broken,
        }
    }

    pub(crate) fn missing(field: &'static str) -> Self {
        Self {
            field,
            message: format!("{field} is required"),
            kind: Rule::Missing,
        }
    }
}

/// A username as shown (NFC) and the key that makes uniqueness ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Username {
    display: String,
    key: String,
}

impl Username {
    pub(crate) fn parse(raw: &str) -> Result<Self, Vec<Violation>> {
        let display: String = raw.nfc().collect();
        let mut broken = Vec::new();
        let chars = display.chars().count();
        if !USERNAME_CHARS.contains(&chars) {
            broken.push(Violation::new(
                "username",
                format!(
                    "username must be {} to {} characters",
                    USERNAME_CHARS.start(),
                    USERNAME_CHARS.end()
                ),
            ));
        }
        if display.chars().any(char::is_whitespace) {
            broken.push(Violation::new(
                "username",
                "username must not contain whitespace",
            ));
        }
        if display.chars().any(char::is_control) {
            broken.push(Violation::new(
                "username",
                "username must not contain control characters",
            ));
        }
        if display.chars().any(is_default_ignorable) {
            broken.push(Violation::new(
                "username",
                "username must not contain invisible characters or bidirectional controls \
                 (zero-width spaces and joiners, direction marks and overrides, fillers)",
            ));
        }
        if !display.chars().any(is_visible) {
            broken.push(Violation::new(
                "username",
                "username must contain a visible letter, digit, punctuation or symbol",
            ));
        }
        if broken.is_empty() {
            let key = Self::key_of(&display);
            Ok(Self { display, key })
        } else {
            Err(broken)
        }
    }

    /// What uniqueness compares beyond case: the confusable skeleton (UTS #39) of the folded
    /// name, so that `alice` and `аlice` (Cyrillic а) cannot both exist.
    pub(crate) fn skeleton(&self) -> String {
        Self::skeleton_of(&self.key)
    }

    pub(crate) fn skeleton_of(key: &str) -> String {
        unicode_security::skeleton(key).collect()
    }

    /// The lookup key of any string: NFC, then Unicode case folding, then NFC again
    /// (folding can denormalise). Used at login too, where no rule is checked.
    pub(crate) fn key_of(raw: &str) -> String {
        let nfc: String = raw.nfc().collect();
        caseless::default_case_fold_str(&nfc).nfc().collect()
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.display
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

/// Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt): characters that render
/// as nothing, among them every bidirectional control and the Hangul fillers. PRECIS
/// (RFC 8264 §9.13) disallows them in every string class.
fn is_default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// A character that shows something: a letter, digit, punctuation or symbol, other than the
/// blank Braille pattern (U+2800). Combining marks alone do not make a name visible.
fn is_visible(c: char) -> bool {
    use GeneralCategoryGroup as G;
    matches!(
        c.general_category_group(),
        G::Letter | G::Number | G::Punctuation | G::Symbol
    ) && c != '\u{2800}'
        && !is_default_ignorable(c)
}

/// A password that meets the strength rules. Deliberately not `Debug`: it must never be printed.
pub(crate) struct Password(String);

impl Password {
    pub(crate) fn parse(raw: String) -> Result<Self, Vec<Violation>> {
        let mut broken = Vec::new();
        let chars = raw.chars().count();
        if !PASSWORD_CHARS.contains(&chars) {
            broken.push(Violation::new(
                "password",
                format!(
                    "password must be {} to {} characters",
                    PASSWORD_CHARS.start(),
                    PASSWORD_CHARS.end()
                ),
            ));
        }
        let has = |want: fn(char) -> bool| raw.chars().any(want);
        if !has(|c| c.general_category() == GeneralCategory::LowercaseLetter) {
            broken.push(Violation::new(
                "password",
                "password needs a lowercase letter",
            ));
        }
        if !has(|c| c.general_category() == GeneralCategory::UppercaseLetter) {
            broken.push(Violation::new(
                "password",
                "password needs an uppercase letter",
            ));
        }
        if !has(is_decimal_digit) {
            broken.push(Violation::new("password", "password needs a digit"));
        }
        if !has(is_special) {
            broken.push(Violation::new(
                "password",
                "password needs a character that is not a letter, a digit, '_' or whitespace",
            ));
        }
        if broken.is_empty() {
            Ok(Self(raw))
        } else {
            Err(broken)
        }
    }

    pub(crate) fn into_inner(self) -> String {
        self.0
    }
}

/// True when a password is too long to be worth hashing; checked before any hashing.
pub(crate) fn password_too_long(raw: &str) -> bool {
    // Byte length bounds the char count from above, so this is cheap for the common case.
    raw.len() > *PASSWORD_CHARS.end() && raw.chars().count() > *PASSWORD_CHARS.end()
}

fn is_decimal_digit(c: char) -> bool {
    c.general_category() == GeneralCategory::DecimalNumber
}

fn is_special(c: char) -> bool {
    let letter = c.general_category_group() == GeneralCategoryGroup::Letter;
    !(letter || is_decimal_digit(c) || c == '_' || c.is_whitespace())
}

/// A public key: base64 (standard or URL-safe, padding optional) of 32 to 2048 bytes, kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey(String);

impl PublicKey {
    pub(crate) fn parse(raw: String) -> Result<Self, Vec<Violation>> {
        // Longest valid text: 2048 bytes in padded base64.
        let max_text = PUBLIC_KEY_BYTES.end().div_ceil(3) * 4;
        let decoded = if raw.len() > max_text {
            None
        } else {
            decode_base64(&raw)
        };
        match decoded {
            Some(bytes) if PUBLIC_KEY_BYTES.contains(&bytes.len()) => Ok(Self(raw)),
            Some(_) | None => Err(vec![Violation::new(
                "public_key",
                format!(
                    "public_key must be base64 of {} to {} bytes",
                    PUBLIC_KEY_BYTES.start(),
                    PUBLIC_KEY_BYTES.end()
                ),
            )]),
        }
    }

    pub(crate) fn into_inner(self) -> String {
        self.0
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [alphabet::STANDARD, alphabet::URL_SAFE]
        .iter()
        .find_map(|a| GeneralPurpose::new(a, config).decode(text).ok())
}

/// A room-independent check every body field shares: present, else a violation.
pub(crate) fn required<T>(
    field: &'static str,
    value: Option<T>,
    broken: &mut Vec<Violation>,
) -> Option<T> {
    if value.is_none() {
        broken.push(Violation::missing(field));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(r: Result<impl Sized, Vec<Violation>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.message)
            .collect()
    }

    #[test]
    fn usernames_with_emoji_are_accepted_and_case_folded() {
        let name = Username::parse("Cookielover57🍪").expect("valid");
        assert_eq!(name.as_str(), "Cookielover57🍪");
        assert_eq!(name.key(), Username::key_of("COOKIELOVER57🍪"));
    }

    #[test]
    fn usernames_are_normalised_to_nfc() {
        let decomposed = Username::parse("Zoe\u{301}xx").expect("valid");
        assert_eq!(decomposed.as_str(), "Zoéxx");
        assert_eq!(decomposed.key(), Username::key_of("ZOÉXX"));
    }

    #[test]
    fn invisible_and_look_alike_names_are_told_apart() {
        assert!(Username::parse("a\u{200B}bc").is_err());
        assert!(Username::parse("\u{202E}abc").is_err());
        assert!(Username::parse("\u{0301}\u{0301}\u{0301}").is_err());
        assert!(Username::parse("\u{2800}\u{2800}\u{2800}").is_err());
        assert!(Username::parse("cookielover57🍪").is_ok());
        let (latin, cyrillic) = (
            Username::parse("alice").expect("valid"),
            Username::parse("\u{0430}lice").expect("valid"),
        );
        assert_ne!(latin.key(), cyrillic.key());
        assert_eq!(latin.skeleton(), cyrillic.skeleton());
    }

    #[test]
    fn sharp_s_folds_like_ss() {
        assert_eq!(Username::key_of("Straße"), Username::key_of("STRASSE"));
    }

    #[test]
    fn username_rules_are_all_reported() {
        let broken = messages(Username::parse("a b"));
        assert_eq!(broken.len(), 1, "{broken:?}");
        // Too short, whitespace, a control character, and nothing visible.
        let broken = messages(Username::parse(" \u{7}"));
        assert_eq!(broken.len(), 4, "{broken:?}");
        assert_eq!(messages(Username::parse(&"x".repeat(10_000))).len(), 1);
    }

    #[test]
    fn weak_passwords_name_each_missing_class() {
        let broken = messages(Password::parse("short".into()));
        assert!(broken.iter().any(|m| m.contains("8 to 128")));
        assert!(broken.iter().any(|m| m.contains("uppercase")));
        assert!(broken.iter().any(|m| m.contains("digit")));
        assert!(broken.iter().any(|m| m.contains("not a letter")));
        assert!(!broken.iter().any(|m| m.contains("lowercase")));
    }

    #[test]
    fn unicode_letters_digits_and_emoji_count() {
        assert!(Password::parse("ÉCOLEécole٣🍪".into()).is_ok());
        // '_' and whitespace are not special characters.
        assert_eq!(
            messages(Password::parse("Password1_ ".into())),
            ["password needs a character that is not a letter, a digit, '_' or whitespace"]
        );
    }

    #[test]
    fn public_keys_accept_both_alphabets_with_or_without_padding() {
        let bytes = [0xfbu8; 33];
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            assert!(PublicKey::parse(engine.encode(bytes)).is_ok());
        }
        assert!(
            PublicKey::parse(base64::engine::general_purpose::STANDARD.encode([1u8; 31])).is_err()
        );
        assert!(PublicKey::parse("not base64!".into()).is_err());
        let too_long = base64::engine::general_purpose::STANDARD.encode([1u8; 2049]);
        assert!(PublicKey::parse(too_long).is_err());
    }

    #[test]
    fn overlong_passwords_are_detected_by_characters() {
        assert!(!password_too_long(&"é".repeat(128)));
        assert!(password_too_long(&"a".repeat(129)));
    }
}
