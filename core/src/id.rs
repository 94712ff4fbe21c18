//! Session identifiers and the record keys derived from them.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

/// Length of a session identifier, in characters.
pub const ID_LEN: usize = 64;

/// Prefix of every session record's key in the store.
pub const RECORD_KEY_PREFIX: &str = "session/";

/// A session identifier: exactly [`ID_LEN`] characters of `[A-Za-z0-9]`.
///
/// 62^64 values (about 381 bits of entropy) when drawn from a cryptographic
/// RNG, so guessing a live one is hopeless. The value is a bearer secret:
/// `Debug` never prints it, and the store only ever sees its SHA-256
/// ([`SessionId::record_key`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// Draws a fresh identifier. Pass a cryptographic RNG (the component
    /// uses the operating system's, which is WASI `random` under Spin).
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        SessionId(random_token(rng, ID_LEN))
    }

    /// Accepts a client-sent value only if it has the exact shape of an
    /// identifier we issue; anything else is no identifier at all.
    pub fn parse(candidate: &str) -> Option<Self> {
        let well_formed =
            candidate.len() == ID_LEN && candidate.bytes().all(|b| b.is_ascii_alphanumeric());
        well_formed.then(|| SessionId(candidate.to_owned()))
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
        for byte in digest {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        key
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
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
        assert!(SessionId::parse(&"a".repeat(63)).is_none());
        assert!(SessionId::parse(&"a".repeat(65)).is_none());
        assert!(SessionId::parse(&("a".repeat(63) + "-")).is_none());
        assert!(SessionId::parse(&("a".repeat(62) + "é")).is_none());
        assert!(SessionId::parse("").is_none());
    }

    #[test]
    fn record_key_is_the_sha256_and_hides_the_id() {
        let id = SessionId::parse(&"A".repeat(64)).unwrap();
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
    fn debug_redacts_the_value() {
        let id = SessionId::parse(&"q".repeat(64)).unwrap();
        assert!(!format!("{id:?}").contains("qqqq"));
    }
}
