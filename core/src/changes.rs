//! What one request changed in its session, kept as a list of operations
//! so that it can be applied again to a fresher record.
//!
//! A save re-applies the list to whatever the store holds when its
//! compare-and-swap loses a race ([`crate::SessionManager::update`]). So two
//! requests that change different keys both keep their changes; for the
//! same key, an [`Change::Insert`] of the request that saves last wins,
//! while an [`Change::Update`] is a function of the value it finds, so
//! concurrent updates compose (two increments add two).

use std::sync::Arc;

use crate::record::SessionRecord;
use crate::values::StoredValue;

/// A read-modify-write of one value: the new value, from the value stored
/// under the key (if any); `None` leaves the key as it is (a stored value
/// the function cannot read).
pub type UpdateFn = Arc<dyn Fn(Option<&StoredValue>) -> Option<StoredValue> + Send + Sync>;

/// One change to a session's record.
#[derive(Clone)]
pub enum Change {
    /// Sets a value.
    Insert(String, StoredValue),
    /// Replaces a value by a function of itself, applied again to whatever
    /// a concurrent save stored: concurrent updates compose.
    Update(String, UpdateFn),
    /// Removes a value.
    Remove(String),
    /// Removes every value and every flash value.
    Clear,
    /// Sets a one-shot value.
    Flash(String, StoredValue),
    /// Removes a one-shot value that was read.
    TakeFlash(String),
    /// Sets or clears the "remember me" lifetime, in seconds.
    Remember(Option<u64>),
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Insert(key, value) => f.debug_tuple("Insert").field(key).field(value).finish(),
            Change::Update(key, _) => f.debug_tuple("Update").field(key).finish(),
            Change::Remove(key) => f.debug_tuple("Remove").field(key).finish(),
            Change::Clear => f.write_str("Clear"),
            Change::Flash(key, value) => f.debug_tuple("Flash").field(key).field(value).finish(),
            Change::TakeFlash(key) => f.debug_tuple("TakeFlash").field(key).finish(),
            Change::Remember(secs) => f.debug_tuple("Remember").field(secs).finish(),
        }
    }
}

/// The changes of one request, in the order they were made.
#[derive(Clone, Debug, Default)]
pub struct Changes(Vec<Change>);

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Changes(Vec::new())
    }

    /// Records `change` and applies it to `record`, the request's view.
    pub fn push(&mut self, change: Change, record: &mut SessionRecord) {
        apply(&change, record);
        self.0.push(change);
    }

    /// True when nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies every change, in order, to `record`.
    pub fn apply_to(&self, record: &mut SessionRecord) {
        for change in &self.0 {
            apply(change, record);
        }
    }
}

fn apply(change: &Change, record: &mut SessionRecord) {
    match change {
        Change::Insert(key, value) => {
            record.data.insert(key.clone(), value.clone());
        }
        Change::Update(key, update) => {
            if let Some(value) = update(record.data.get(key)) {
                record.data.insert(key.clone(), value);
            }
        }
        Change::Remove(key) => {
            record.data.remove(key);
        }
        Change::Clear => {
            record.data.clear();
            record.flash.clear();
        }
        Change::Flash(key, value) => {
            record.flash.insert(key.clone(), value.clone());
        }
        Change::TakeFlash(key) => {
            record.flash.remove(key);
        }
        Change::Remember(lifetime) => record.remember_secs = *lifetime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_in_order_and_again_to_another_record() {
        let mut view = SessionRecord::new(10, "t".into());
        let mut changes = Changes::new();
        assert!(changes.is_empty());
        changes.push(Change::Insert("a".into(), StoredValue::from(1)), &mut view);
        changes.push(Change::Insert("b".into(), StoredValue::from(2)), &mut view);
        changes.push(Change::Remove("a".into()), &mut view);
        changes.push(Change::Flash("note".into(), "hi".into()), &mut view);
        changes.push(Change::Remember(Some(600)), &mut view);
        assert_eq!(view.data.len(), 1);
        assert_eq!(view.data["b"], StoredValue::from(2));
        assert_eq!(view.flash["note"], StoredValue::from("hi"));
        assert_eq!(view.remember_secs, Some(600));

        // Another request stored `a` and `c` meanwhile: this request's
        // changes go on top, key by key.
        let mut fresher = SessionRecord::new(10, "t".into());
        fresher.data.insert("a".into(), StoredValue::from("theirs"));
        fresher.data.insert("c".into(), StoredValue::from("theirs"));
        changes.apply_to(&mut fresher);
        assert_eq!(fresher.data.get("a"), None, "removed here, after theirs");
        assert_eq!(fresher.data["b"], StoredValue::from(2));
        assert_eq!(
            fresher.data["c"],
            StoredValue::from("theirs"),
            "untouched here"
        );
        assert_eq!(fresher.remember_secs, Some(600));
    }

    #[test]
    fn updates_compose_with_what_others_stored() {
        let increment: UpdateFn = Arc::new(|old: Option<&StoredValue>| {
            let n: u64 = old.map_or(Some(0), |v| v.to().ok())?;
            StoredValue::new(&(n + 1)).ok()
        });
        let mut view = SessionRecord::new(10, "t".into());
        view.data.insert("n".into(), StoredValue::from(5));
        let mut changes = Changes::new();
        changes.push(Change::Update("n".into(), increment.clone()), &mut view);
        changes.push(Change::Update("n".into(), increment), &mut view);
        assert_eq!(view.data["n"], StoredValue::from(7));
        // Another request counted three meanwhile: ours come on top.
        let mut fresher = SessionRecord::new(10, "t".into());
        fresher.data.insert("n".into(), StoredValue::from(8));
        changes.apply_to(&mut fresher);
        assert_eq!(fresher.data["n"], StoredValue::from(10));
        // A value the function cannot read is left alone.
        let mut other = SessionRecord::new(10, "t".into());
        other.data.insert("n".into(), StoredValue::from("text"));
        changes.apply_to(&mut other);
        assert_eq!(other.data["n"], StoredValue::from("text"));
        assert!(format!("{changes:?}").contains("Update(\"n\")"));
    }

    #[test]
    fn clear_and_take_flash() {
        let mut view = SessionRecord::new(10, "t".into());
        view.data.insert("x".into(), StoredValue::from(1));
        view.flash.insert("f".into(), StoredValue::from(2));
        view.flash.insert("g".into(), StoredValue::from(3));
        let mut changes = Changes::new();
        changes.push(Change::TakeFlash("f".into()), &mut view);
        assert_eq!(view.flash.len(), 1);
        changes.push(Change::Clear, &mut view);
        assert!(view.data.is_empty() && view.flash.is_empty());
    }
}
