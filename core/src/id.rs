//! Session identifiers, the record keys derived from them, and the
//! identifiers handed out before anything is stored.
//!
//! Every identifier is 64 characters of `[A-Za-z0-9]`, and its first
//! character says what it is:
//!
//! - a lowercase letter or a digit: a [`SessionId`], whose record is (or
//!   was) in the store;
//! - an uppercase letter: a [`PendingId`], given to a visitor who has no
//!   session yet, so that a form can carry a token bound to the browser
//!   while nothing is stored. Its last [`TAG_LEN`] characters are an
//!   HMAC-SHA256 of the rest under the store's [`SigningKey`], so only this
//!   application can issue one. A pending identifier is never adopted as a
//!   session's: the first write creates the session under a fresh
//!   [`SessionId`].

use hmac::{Hmac, Mac};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Length of a session identifier, in characters.
pub const ID_LEN: usize = 64;

/// Length of the tag that ends a [`PendingId`].
pub const TAG_LEN: usize = 22;

/// Prefix of every session record's key in the store.
pub const RECORD_KEY_PREFIX: &str = "session/";

/// Where the store keeps its [`SigningKey`].
pub const SIGNING_KEY_KEY: &str = "sessions/signing-key";

/// A stored session's identifier: [`ID_LEN`] characters of `[A-Za-z0-9]`,
/// the first a lowercase letter or a digit.
///
/// 36 × 62^63 values (about 380 bits of entropy) when drawn from a
/// cryptographic RNG, so guessing a live one is hopeless. The value is a
/// bearer secret: `Debug` never prints it, and the store only ever sees its
/// SHA-256 ([`SessionId::record_key`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

const LOWER_AND_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// What a well-formed cookie value is, by its first character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieId {
    /// The identifier of a stored session.
    Stored(SessionId),
    /// A pending identifier, not yet checked against the signing key.
    Pending(String),
}

impl CookieId {
    /// The identifier as the cookie carried it.
    pub fn as_str(&self) -> &str {
        match self {
            CookieId::Stored(id) => id.as_str(),
            CookieId::Pending(text) => text,
        }
    }

    /// Accepts a client-sent value only if it has the exact shape of an
    /// identifier we issue; anything else is no identifier at all.
    pub fn parse(candidate: &str) -> Option<Self> {
        let bytes = candidate.as_bytes();
        if bytes.len() != ID_LEN || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        Some(if bytes[0].is_ascii_uppercase() {
            CookieId::Pending(candidate.to_owned())
        } else {
            CookieId::Stored(SessionId(candidate.to_owned()))
        })
    }
}

impl SessionId {
    /// Draws a fresh identifier. Pass a cryptographic RNG (the component
    /// uses the operating system's, which is WASI `random` under Spin).
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let first = char::from(LOWER_AND_DIGITS[rng.random_range(0..LOWER_AND_DIGITS.len())]);
        let mut id = String::with_capacity(ID_LEN);
        id.push(first);
        id.push_str(&random_token(rng, ID_LEN - 1));
        SessionId(id)
    }

    /// Accepts a client-sent value only if it has the exact shape of a
    /// stored session's identifier.
    pub fn parse(candidate: &str) -> Option<Self> {
        match CookieId::parse(candidate)? {
            CookieId::Stored(id) => Some(id),
            CookieId::Pending(_) => None,
        }
    }

    /// The identifier as sent in the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store key of this session's record: the prefix and the hex
    /// SHA-256 of the identifier, so a copy of the store yields no cookie.
    pub fn record_key(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut key = String::with_capacity(RECORD_KEY_PREFIX.len() + 64);
        key.push_str(RECORD_KEY_PREFIX);
        key.push_str(&hex(&digest));
        key
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// An identifier this application issued to a visitor without a session
/// (see the module docs). Checked: only [`SigningKey::issue`] and
/// [`SigningKey::verify`] make one.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingId(String);

impl PendingId {
    /// The identifier as sent in the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PendingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingId(<redacted>)")
    }
}

/// The secret that signs [`PendingId`]s and their CSRF tokens. Each store
/// makes its own on first use and keeps it at [`SIGNING_KEY_KEY`], so no
/// operator has to configure one, and every instance on the store agrees.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey([u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        SigningKey(bytes)
    }

    /// The stored form: 64 hex digits.
    pub fn encode(&self) -> Vec<u8> {
        hex(&self.0).into_bytes()
    }

    /// Reads the stored form; `None` for anything else.
    pub fn decode(stored: &[u8]) -> Option<Self> {
        if stored.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(stored.chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(SigningKey(bytes))
    }

    /// A fresh pending identifier: an uppercase letter, random characters,
    /// and the tag of both.
    pub fn issue<R: rand::CryptoRng + ?Sized>(&self, rng: &mut R) -> PendingId {
        let mut id = String::with_capacity(ID_LEN);
        id.push(char::from(UPPER[rng.random_range(0..UPPER.len())]));
        id.push_str(&random_token(rng, ID_LEN - TAG_LEN - 1));
        let tag = self.alphanumeric_mac(&[b"pending-id", id.as_bytes()], TAG_LEN);
        id.push_str(&tag);
        PendingId(id)
    }

    /// The pending identifier `candidate` is, if this key issued it.
    pub fn verify(&self, candidate: &str) -> Option<PendingId> {
        let CookieId::Pending(id) = CookieId::parse(candidate)? else {
            return None;
        };
        let (body, tag) = id.split_at(ID_LEN - TAG_LEN);
        let expected = self.alphanumeric_mac(&[b"pending-id", body.as_bytes()], TAG_LEN);
        constant_time_eq(expected.as_bytes(), tag.as_bytes()).then_some(PendingId(id))
    }

    /// The CSRF token of a visitor holding `pending`: derived, not stored,
    /// so the visitor's first form post is checked before anything exists.
    pub fn csrf_token(&self, pending: &PendingId) -> String {
        self.alphanumeric_mac(&[b"csrf-token", pending.as_str().as_bytes()], 32)
    }

    /// HMAC-SHA256 of `parts` (each length-prefixed, so no two lists of
    /// parts collide), as `len` characters of `[A-Za-z0-9]`.
    fn alphanumeric_mac(&self, parts: &[&[u8]], len: usize) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        // 62 of 256 byte values map one more time than the others; each
        // character still carries over 5.9 bits, 130 in a tag.
        digest
            .iter()
            .take(len)
            .map(|byte| char::from(ALPHANUMERIC[usize::from(*byte) % ALPHANUMERIC.len()]))
            .collect()
    }
}

/// A short, stable key for a client address, for the quota of new sessions:
/// 16 hex digits of its SHA-256, so that the store never holds the address
/// itself.
pub fn client_key(address: &str) -> String {
    hex(&Sha256::digest(address.as_bytes())[..8])
}

/// Compares without stopping at the first difference, so that the time
/// taken says nothing about how much of a guessed secret was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// A random string of `len` characters of `[A-Za-z0-9]`, uniformly drawn.
pub fn random_token<R: rand::CryptoRng + ?Sized>(rng: &mut R, len: usize) -> String {
    Alphanumeric.sample_string(rng, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;
    use rand::TryRngCore;

    #[test]
    fn generated_ids_have_the_length_and_alphabet() {
        let mut rng = OsRng.unwrap_err();
        for _ in 0..200 {
            let id = SessionId::generate(&mut rng);
            assert_eq!(id.as_str().len(), ID_LEN);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn generated_ids_use_the_whole_alphabet_and_differ() {
        let mut rng = OsRng.unwrap_err();
        let ids: Vec<SessionId> = (0..100).map(|_| SessionId::generate(&mut rng)).collect();
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            seen.extend(id.as_str().bytes());
        }
        // 6 400 draws over 62 symbols: missing one would be astronomically rare.
        assert_eq!(seen.len(), 62);
        let distinct: std::collections::HashSet<&str> = ids.iter().map(|i| i.as_str()).collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn parse_accepts_only_the_exact_shape() {
        let good = "a".repeat(63) + "Z";
        assert!(SessionId::parse(&good).is_some());
        // The shape of a pending identifier is not a stored one's.
        assert!(SessionId::parse(&("Z".to_owned() + &"a".repeat(63))).is_none());
        assert!(SessionId::parse(&"a".repeat(63)).is_none());
        assert!(SessionId::parse(&"a".repeat(65)).is_none());
        assert!(SessionId::parse(&("a".repeat(63) + "-")).is_none());
        assert!(SessionId::parse(&("a".repeat(62) + "é")).is_none());
        assert!(SessionId::parse("").is_none());
    }

    #[test]
    fn record_key_is_the_sha256_and_hides_the_id() {
        let id = SessionId("A".repeat(64));
        let key = id.record_key();
        assert!(key.starts_with(RECORD_KEY_PREFIX));
        assert_eq!(key.len(), RECORD_KEY_PREFIX.len() + 64);
        assert!(!key.contains(id.as_str()));
        // SHA-256 of 64 'A's, computed independently with sha256sum.
        assert_eq!(
            &key[RECORD_KEY_PREFIX.len()..],
            "d53eda7a637c99cc7fb566d96e9fa109bf15c478410a3f5eb4d4c4e26cd081f6"
        );
    }

    #[test]
    fn generated_ids_start_lowercase_or_with_a_digit() {
        let mut rng = OsRng.unwrap_err();
        let firsts: std::collections::HashSet<u8> = (0..2000)
            .map(|_| SessionId::generate(&mut rng).as_str().as_bytes()[0])
            .collect();
        assert!(firsts.iter().all(|b| LOWER_AND_DIGITS.contains(b)));
        assert_eq!(firsts.len(), LOWER_AND_DIGITS.len());
    }

    #[test]
    fn pending_ids_verify_only_under_their_key() {
        let mut rng = OsRng.unwrap_err();
        let key = SigningKey::generate(&mut rng);
        let other = SigningKey::generate(&mut rng);
        let pending = key.issue(&mut rng);
        let text = pending.as_str();
        assert_eq!(text.len(), ID_LEN);
        assert!(text.as_bytes()[0].is_ascii_uppercase());
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(key.verify(text), Some(pending.clone()));
        assert_eq!(other.verify(text), None);
        // One changed character anywhere breaks it.
        for at in [1, 20, ID_LEN - 1] {
            let mut forged = text.as_bytes().to_vec();
            forged[at] = if forged[at] == b'x' { b'y' } else { b'x' };
            assert_eq!(key.verify(std::str::from_utf8(&forged).unwrap()), None);
        }
        // Random uppercase-first values are not pending ids.
        let forged = "Q".to_owned() + &random_token(&mut rng, ID_LEN - 1);
        assert_eq!(key.verify(&forged), None);
        // Tokens: per id, per key, stable.
        let token = key.csrf_token(&pending);
        assert_eq!(token.len(), 32);
        assert_eq!(token, key.csrf_token(&pending));
        assert_ne!(token, key.csrf_token(&key.issue(&mut rng)));
        assert_ne!(token, other.csrf_token(&pending));
    }

    #[test]
    fn signing_keys_round_trip_and_refuse_garbage() {
        let key = SigningKey::generate(&mut OsRng.unwrap_err());
        assert_eq!(SigningKey::decode(&key.encode()), Some(key));
        for garbage in [&b""[..], b"zz", &[b'g'; 64], &[b'0'; 63]] {
            assert_eq!(SigningKey::decode(garbage), None);
        }
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn debug_redacts_the_value() {
        let id = SessionId::parse(&"q".repeat(64)).unwrap();
        assert!(!format!("{id:?}").contains("qqqq"));
    }
}
