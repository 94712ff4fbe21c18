//! The store's one [`SigningKey`]: made by the first requests that need it,
//! and never replaced.
//!
//! Spin's stores give no way to create a key only if it is absent (their
//! SQLite store turns the compare-and-swap of an absent key into a plain
//! write), and a request that wins a draw may stall or die before writing.
//! So the key is chosen by compare-and-swap on a key that always exists
//! once touched, a counter:
//!
//! 1. a request that finds no key takes a ticket (`increment` of
//!    [`TICKETS_KEY`]) and writes a candidate key under its ticket;
//! 2. it makes sure [`WINNER_KEY`] exists (`increment` by 0: 0 means "no
//!    winner yet") and swaps it from 0 to its ticket;
//! 3. the ticket the counter then holds names the one key; whoever learns
//!    it copies that key to [`SIGNING_KEY_KEY`] (the same bytes, whoever
//!    writes them), where every later request reads it in one `get`.
//!
//! Nothing waits on anybody: a request that dies at any point leaves the
//! winner undecided (the next request decides it) or decided with its
//! candidate already written. A losing candidate is deleted by its writer.

use crate::id::{SigningKey, SIGNING_KEY_KEY};
use crate::store::{SessionStore, Snapshot, StoreError, Swap};

/// The counter that hands out candidates' tickets.
pub const TICKETS_KEY: &str = "sessions/signing-key/tickets";

/// The counter that holds the winning ticket (0 while there is none).
pub const WINNER_KEY: &str = "sessions/signing-key/winner";

/// Where the candidate of ticket `ticket` is written.
pub fn candidate_key(ticket: i64) -> String {
    format!("sessions/signing-key/candidate/{ticket}")
}

/// The store's key, if it has been copied to [`SIGNING_KEY_KEY`] (one read).
pub fn stored<S: SessionStore>(store: &S) -> Result<Option<SigningKey>, StoreError> {
    Ok(store
        .get(SIGNING_KEY_KEY)?
        .as_deref()
        .and_then(SigningKey::decode))
}

/// The store's key: read, or chosen now (see the module docs).
pub fn get_or_make<S: SessionStore, R: rand::CryptoRng + ?Sized>(
    store: &S,
    rng: &mut R,
) -> Result<SigningKey, StoreError> {
    if let Some(key) = stored(store)? {
        return Ok(key);
    }
    let winner = match store.increment(WINNER_KEY, 0)? {
        0 => run(store, rng)?,
        ticket => ticket,
    };
    let key = store
        .get(&candidate_key(winner))?
        .as_deref()
        .and_then(SigningKey::decode)
        .ok_or_else(|| StoreError(format!("the signing key of ticket {winner} is missing")))?;
    store.set(SIGNING_KEY_KEY, &key.encode())?;
    Ok(key)
}

/// Stands as a candidate; returns the winning ticket (this one's or
/// another's).
fn run<S: SessionStore, R: rand::CryptoRng + ?Sized>(
    store: &S,
    rng: &mut R,
) -> Result<i64, StoreError> {
    let ticket = store.increment(TICKETS_KEY, 1)?;
    let candidate = candidate_key(ticket);
    store.set(&candidate, &SigningKey::generate(rng).encode())?;
    let snapshot = store.snapshot(WINNER_KEY)?;
    let current = snapshot.value().and_then(decode_counter);
    let winner = match current {
        Some(0) => {
            let value = encode_counter_like(ticket, snapshot.value().unwrap_or_default());
            match store.swap(snapshot, &value)? {
                Swap::Done => ticket,
                Swap::NotConfirmed(fresh) => fresh
                    .value()
                    .and_then(decode_counter)
                    .ok_or_else(|| StoreError("the signing-key winner did not read back".into()))?,
            }
        }
        Some(other) => other,
        None => return Err(StoreError("the signing-key winner is not a counter".into())),
    };
    if winner != ticket {
        store.delete(&candidate)?;
    }
    Ok(winner)
}

/// A counter's value from its stored bytes, in either of Spin's encodings:
/// eight bytes little-endian (SQLite) or decimal text (Redis). Tickets stay
/// far below 10⁷, so the two never meet.
fn decode_counter(bytes: &[u8]) -> Option<i64> {
    if bytes.len() == 8 && !bytes.iter().all(u8::is_ascii_digit) {
        return Some(i64::from_le_bytes(bytes.try_into().ok()?));
    }
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// `value` in the encoding of `like` (a counter's stored bytes), so that
/// the key stays a counter `increment` can read.
fn encode_counter_like(value: i64, like: &[u8]) -> Vec<u8> {
    if like.len() == 8 && !like.iter().all(u8::is_ascii_digit) {
        value.to_le_bytes().to_vec()
    } else {
        value.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryStore, SwapBehaviour};
    use rand::rngs::OsRng;
    use rand::TryRngCore;

    fn rng() -> rand::rand_core::UnwrapErr<OsRng> {
        OsRng.unwrap_err()
    }

    const BEHAVIOURS: [SwapBehaviour; 3] = [
        SwapBehaviour::Honest,
        SwapBehaviour::SpinSqlite,
        SwapBehaviour::SpinRedis,
    ];

    #[test]
    fn counters_read_in_both_encodings() {
        assert_eq!(decode_counter(&7i64.to_le_bytes()), Some(7));
        assert_eq!(decode_counter(b"7"), Some(7));
        assert_eq!(decode_counter(b"1234567"), Some(1_234_567));
        assert_eq!(decode_counter(b"garbage"), None);
        assert_eq!(
            encode_counter_like(5, &0i64.to_le_bytes()),
            5i64.to_le_bytes()
        );
        assert_eq!(encode_counter_like(5, b"0"), b"5");
    }

    #[test]
    fn the_key_is_made_once_and_then_read() {
        for behaviour in BEHAVIOURS {
            let store = MemoryStore::with_behaviour(behaviour);
            let key = get_or_make(&store, &mut rng()).unwrap();
            let (reads, writes) = (store.reads(), store.writes());
            assert_eq!(get_or_make(&store, &mut rng()).unwrap(), key);
            assert_eq!(
                (store.reads(), store.writes()),
                (reads + 1, writes),
                "{behaviour:?}"
            );
            assert_eq!(stored(&store).unwrap(), Some(key), "{behaviour:?}");
        }
    }

    #[test]
    fn a_request_that_dies_before_the_swap_leaves_the_choice_open() {
        for behaviour in BEHAVIOURS {
            let store = MemoryStore::with_behaviour(behaviour);
            // A first request took ticket 1 and wrote its candidate, then died.
            store.increment(TICKETS_KEY, 1).unwrap();
            store.put(
                &candidate_key(1),
                &SigningKey::generate(&mut rng()).encode(),
            );
            let key = get_or_make(&store, &mut rng()).unwrap();
            assert_eq!(
                SigningKey::decode(&store.peek(&candidate_key(2)).unwrap()),
                Some(key),
                "{behaviour:?}: the next request's candidate won"
            );
        }
    }

    #[test]
    fn a_winner_that_dies_before_the_copy_is_still_the_key() {
        for behaviour in BEHAVIOURS {
            let store = MemoryStore::with_behaviour(behaviour);
            let winner = SigningKey::generate(&mut rng());
            store.increment(TICKETS_KEY, 1).unwrap();
            store.put(&candidate_key(1), &winner.encode());
            store.increment(WINNER_KEY, 0).unwrap();
            let snapshot = store.snapshot(WINNER_KEY).unwrap();
            let value = encode_counter_like(1, snapshot.value().unwrap());
            store.put(WINNER_KEY, &value);
            assert_eq!(
                get_or_make(&store, &mut rng()).unwrap(),
                winner,
                "{behaviour:?}"
            );
            assert_eq!(stored(&store).unwrap(), Some(winner), "{behaviour:?}");
        }
    }

    #[test]
    fn racing_candidates_agree_on_one_key_and_losers_clean_up() {
        for behaviour in BEHAVIOURS {
            let store = MemoryStore::with_behaviour(behaviour);
            // A second request finds no key and stands too, right after the
            // first one read the winner as 0 (the seam runs then).
            store.increment(WINNER_KEY, 0).unwrap();
            let other = SigningKey::generate(&mut rng());
            let other_bytes = other.encode();
            store.after_next_snapshot(move |s| {
                let ticket = s.increment(TICKETS_KEY, 1).unwrap();
                s.put(&candidate_key(ticket), &other_bytes);
                let value = encode_counter_like(ticket, &s.peek(WINNER_KEY).unwrap());
                s.put(WINNER_KEY, &value);
            });
            let key = get_or_make(&store, &mut rng()).unwrap();
            assert_eq!(key, other, "{behaviour:?}: the first swap to land wins");
            assert!(store.peek(&candidate_key(1)).is_none(), "{behaviour:?}");
            assert_eq!(stored(&store).unwrap(), Some(other), "{behaviour:?}");
        }
    }
}
