//! What one request changed in its session, kept as a list of operations
//! so that it can be applied again to a fresher record.
//!
//! A save re-applies the list to whatever the store holds when its
//! compare-and-swap loses a race ([`crate::SessionManager::update`]). So two
//! requests that change different keys both keep their changes, and for the
//! same key the one that saves last wins: the guarantee is per key, not per
//! record.

use crate::record::SessionRecord;
use crate::values::StoredValue;

/// One change to a session's record.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Sets a value.
    Insert(String, StoredValue),
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

/// The changes of one request, in the order they were made.
#[derive(Clone, Debug, Default, PartialEq)]
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
