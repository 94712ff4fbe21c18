//! A small reader for TOML tables that reports every key it did not consume.
//!
//! The manifest and runtime-config parsers read tables through it so that an
//! unknown or unsupported key is always an error naming the key and where it
//! is, never silently ignored.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use toml::{Table, Value};

/// Reads the keys of one TOML table, tracking which were consumed.
pub struct Fields<'a> {
    table: &'a Table,
    /// Where the table is, for messages: e.g. "[component.probe]".
    place: String,
    used: BTreeSet<&'a str>,
}

/// The TOML type name of a value, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

impl<'a> Fields<'a> {
    /// Starts reading `table`, described as `place` in messages.
    pub fn new(table: &'a Table, place: impl Into<String>) -> Self {
        Self {
            table,
            place: place.into(),
            used: BTreeSet::new(),
        }
    }

    /// Where this table is, for messages.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Takes `key` without interpreting it.
    pub fn raw(&mut self, key: &'a str) -> Option<&'a Value> {
        let (k, v) = self.table.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some(v)
    }

    /// An optional string.
    pub fn string(&mut self, key: &'a str) -> Result<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => bail!(
                "{}: `{key}` must be a string, found {}",
                self.place,
                type_name(other)
            ),
        }
    }

    /// A string that must be present.
    pub fn required_string(&mut self, key: &'a str) -> Result<String> {
        match self.string(key)? {
            Some(s) => Ok(s),
            None => bail!("{}: missing required field `{key}`", self.place),
        }
    }

    /// An optional boolean, `false` when absent.
    pub fn bool(&mut self, key: &'a str) -> Result<bool> {
        match self.raw(key) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(other) => bail!(
                "{}: `{key}` must be a boolean, found {}",
                self.place,
                type_name(other)
            ),
        }
    }

    /// An optional array of strings, empty when absent.
    pub fn string_array(&mut self, key: &'a str) -> Result<Vec<String>> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => bail!(
                        "{}: `{key}` must be an array of strings, found {} in it",
                        self.place,
                        type_name(other)
                    ),
                })
                .collect(),
            Some(other) => bail!(
                "{}: `{key}` must be an array of strings, found {}",
                self.place,
                type_name(other)
            ),
        }
    }

    /// An optional table.
    pub fn table(&mut self, key: &'a str) -> Result<Option<&'a Table>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(other) => bail!(
                "{}: `{key}` must be a table, found {}",
                self.place,
                type_name(other)
            ),
        }
    }

    /// An optional table whose values are all strings.
    pub fn string_map(&mut self, key: &'a str) -> Result<Vec<(String, String)>> {
        let place = self.place.clone();
        let Some(table) = self.table(key)? else {
            return Ok(Vec::new());
        };
        table
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => bail!(
                    "{place}: `{key}.{k}` must be a string, found {}",
                    type_name(other)
                ),
            })
            .collect()
    }

    /// Takes `key` and tells whether it is present with a non-empty value
    /// (an empty array, table or string, or `false`, count as unset).
    pub fn is_set(&mut self, key: &'a str) -> bool {
        match self.raw(key) {
            None => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Table(t)) => !t.is_empty(),
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Boolean(b)) => *b,
            Some(_) => true,
        }
    }

    /// Fails if `key` is present with a non-empty value: the feature is
    /// valid in Spin but this host does not implement it.
    pub fn reject_if_set(&mut self, key: &'a str, why: &str) -> Result<()> {
        if self.is_set(key) {
            bail!(
                "{}: `{key}` is not supported by this host ({why})",
                self.place
            )
        }
        Ok(())
    }

    /// Fails if any key was not consumed.
    pub fn finish(self) -> Result<()> {
        let unknown: Vec<&str> = self
            .table
            .keys()
            .map(String::as_str)
            .filter(|k| !self.used.contains(k))
            .collect();
        match unknown.as_slice() {
            [] => Ok(()),
            [one] => bail!("{}: unknown field `{one}`", self.place),
            many => bail!(
                "{}: unknown fields {}",
                self.place,
                many.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
