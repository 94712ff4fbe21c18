//! The application's values as a record holds them: each one as its JSON
//! text, by key.

use std::fmt;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One application value, kept as the JSON text it is stored as.
///
/// The record keeps each value's text as written instead of a parsed tree:
/// reading a record then only checks the values' syntax, and a value is
/// parsed once, straight into the type asked for, when the application
/// reads it. Two values are equal when their texts are (this code always
/// writes compact JSON, so equal values written here have equal texts).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredValue(Box<RawValue>);

impl StoredValue {
    /// `value` as it will be stored; fails when serde cannot represent it
    /// as JSON (a map with non-string keys, a failing `Serialize` impl).
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(StoredValue)
    }

    /// The value as a `T`.
    pub fn to<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        // From bytes, as records are read: one copy of the parser in the
        // component instead of one per input type.
        serde_json::from_slice(self.0.get().as_bytes())
    }

    /// The stored JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// True when the value is a JSON string.
    pub fn is_string(&self) -> bool {
        self.json().starts_with('"')
    }
}

impl PartialEq for StoredValue {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl From<&str> for StoredValue {
    /// A string value.
    fn from(text: &str) -> Self {
        StoredValue::new(text).expect("a string always serialises")
    }
}

impl From<i64> for StoredValue {
    /// A number value.
    fn from(number: i64) -> Self {
        StoredValue::new(&number).expect("a number always serialises")
    }
}

/// Values by key, in key order; stored as a JSON object.
///
/// A sorted list rather than a `BTreeMap`: a session holds a handful of
/// keys, and the tree's code would be a twentieth of the component.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values(Vec<(String, StoredValue)>);

impl Values {
    /// No values.
    pub fn new() -> Self {
        Values(Vec::new())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&StoredValue> {
        let at = self.find(key).ok()?;
        Some(&self.0[at].1)
    }

    /// True when there is a value under `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets the value under `key`, returning the one it replaces.
    pub fn insert(&mut self, key: String, value: StoredValue) -> Option<StoredValue> {
        match self.find(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    /// Removes the value under `key` and returns it.
    pub fn remove(&mut self, key: &str) -> Option<StoredValue> {
        let at = self.find(key).ok()?;
        Some(self.0.remove(at).1)
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _)| key.as_str())
    }

    /// The keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StoredValue)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value))
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl std::ops::Index<&str> for Values {
    type Output = StoredValue;

    /// The value under `key`; panics when there is none, as maps do.
    fn index(&self, key: &str) -> &StoredValue {
        self.get(key).expect("no value under this key")
    }
}

impl Serialize for Values {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ValuesVisitor)
    }
}

struct ValuesVisitor;

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = Values;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of values")
    }

    /// A key given twice keeps its last value, as JSON parsers into maps do.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Values, A::Error> {
        let mut values = Values::new();
        while let Some((key, value)) = map.next_entry::<String, StoredValue>()? {
            values.insert(key, value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_in_key_order_and_serialise_as_an_object() {
        let mut values = Values::new();
        assert_eq!(values.insert("b".into(), 2.into()), None);
        values.insert("a".into(), "one".into());
        values.insert("c".into(), StoredValue::new(&[1, 2]).unwrap());
        assert_eq!(values.insert("b".into(), 3.into()), Some(2.into()));
        assert_eq!(values.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(
            serde_json::to_string(&values).unwrap(),
            r#"{"a":"one","b":3,"c":[1,2]}"#
        );
        assert_eq!(values.remove("a"), Some("one".into()));
        assert_eq!(values.remove("a"), None);
        assert!(!values.contains_key("a") && values.contains_key("c"));
        assert_eq!(values["c"].to::<Vec<u8>>().unwrap(), [1, 2]);
    }

    #[test]
    fn reading_sorts_keys_and_keeps_the_last_of_a_repeated_one() {
        let values: Values =
            serde_json::from_str(r#"{"z": 1, "a": {"x": [ 1 ]}, "z": 2}"#).unwrap();
        assert_eq!(values.keys().collect::<Vec<_>>(), ["a", "z"]);
        assert_eq!(values["z"], 2.into());
        assert_eq!(values["a"].json(), r#"{"x": [ 1 ]}"#, "the text as stored");
        assert!(serde_json::from_str::<Values>("[]").is_err());
        assert!(serde_json::from_str::<Values>(r#"{"a": tru}"#).is_err());
    }

    #[test]
    fn a_value_reads_as_its_type_or_fails() {
        let value = StoredValue::from("Ada");
        assert!(value.is_string());
        assert_eq!(value.to::<String>().unwrap(), "Ada");
        assert!(value.to::<i64>().is_err());
        assert!(!StoredValue::from(7).is_string());
    }
}
