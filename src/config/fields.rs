//! Typed reading of one table of the parsed config ([`super::toml_subset`]):
//! the keys a section may have (any other is refused, the first in file
//! order), and each value as a string, an integer in a range, a boolean, a
//! list of strings or a table. Every error names the file, the line and the
//! key, and clips the value it quotes.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::toml_subset::{Node, Table, Value};
use crate::error::{bail, err, Error, Result};
use crate::text::clip;
use std::fmt::Display;

/// One table, read key by key.
pub struct Fields<'a> {
    file: &'a dyn Display,
    /// Put before keys in messages: "", "limits.", "volume[3].".
    prefix: String,
    /// The section as the admin writes it, for messages: "[limits]".
    section: &'a str,
    table: &'a Table,
}

impl<'a> Fields<'a> {
    /// Refuses any key of `table` not in `known`, the first in file order.
    pub fn new(
        file: &'a dyn Display,
        prefix: String,
        section: &'a str,
        table: &'a Table,
        known: &[&str],
    ) -> Result<Self> {
        let unknown = table
            .entries
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .min_by_key(|(_, n)| n.line);
        if let Some((k, n)) = unknown {
            let within = if section.is_empty() {
                String::new()
            } else {
                format!(" in {section}")
            };
            let list = known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "{file} (line {}): unknown field `{}`{within}, expected one of {list}",
                n.line,
                shown_key(k)
            );
        }
        Ok(Fields {
            file,
            prefix,
            section,
            table,
        })
    }

    /// "FILE (line N)", the start of every message about `line`.
    pub fn at(&self, line: usize) -> String {
        format!("{} (line {line})", self.file)
    }

    pub fn node(&self, key: &str) -> Option<&'a Node> {
        self.table.entries.get(key)
    }

    /// "invalid type" for `key`, saying what was found and what is wanted.
    pub fn wrong(&self, key: &str, node: &Node, expected: &str) -> Error {
        err!(
            "{}: {}{key}: invalid type: {}, expected {expected}",
            self.at(node.line),
            self.prefix,
            describe(&node.value)
        )
    }

    /// "missing field" for a key the section must have.
    pub fn missing(&self, key: &str) -> Error {
        err!(
            "{}: missing field `{key}` in {}; add {key} = …",
            self.at(self.table.line),
            self.section
        )
    }

    pub fn str(&self, key: &str) -> Result<Option<(&'a str, usize)>> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                line,
                value: Value::Str(s),
            }) => Ok(Some((s.as_str(), *line))),
            Some(n) => Err(self.wrong(key, n, "a string")),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<(&'a str, usize)> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                value: Value::Bool(b),
                ..
            }) => Ok(Some(*b)),
            Some(n) => Err(self.wrong(key, n, "true or false")),
        }
    }

    /// An integer from `lo` to `hi`.
    pub fn int(&self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                line,
                value: Value::Int(v),
            }) => {
                if *v < lo || *v > hi {
                    bail!(
                        "{}: {}{key} = {v}: expected {lo} to {hi}",
                        self.at(*line),
                        self.prefix
                    );
                }
                Ok(Some(*v))
            }
            Some(n) => Err(self.wrong(key, n, "an integer")),
        }
    }

    /// A list of strings, each with its line; `expected` describes the
    /// key's value in a type error.
    pub fn strs(&self, key: &str, expected: &str) -> Result<Option<Vec<(&'a str, usize)>>> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                value: Value::Array(items),
                ..
            }) => items
                .iter()
                .map(|n| match &n.value {
                    Value::Str(s) => Ok((s.as_str(), n.line)),
                    _ => Err(self.wrong(key, n, "a string in the list")),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(n) => Err(self.wrong(key, n, expected)),
        }
    }

    /// A `[key]` table.
    pub fn table(&self, key: &str) -> Result<Option<&'a Table>> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                value: Value::Table(t),
                ..
            }) => Ok(Some(t)),
            Some(n) => Err(self.wrong(key, n, &format!("a table: [{key}]"))),
        }
    }

    /// `[[key]]` tables (an empty `key = []` is none).
    pub fn tables(&self, key: &str) -> Result<&'a [Table]> {
        match self.node(key) {
            None => Ok(&[]),
            Some(Node {
                value: Value::Tables(v),
                ..
            }) => Ok(v),
            Some(Node {
                value: Value::Array(v),
                ..
            }) if v.is_empty() => Ok(&[]),
            Some(n) => Err(self.wrong(key, n, &format!("[[{key}]] tables"))),
        }
    }
}

/// A value as a type error shows it.
fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("string {}", clip(s)),
        Value::Int(n) => format!("integer {n}"),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
        Value::Tables(_) => "an array of tables".into(),
    }
}

/// A key as the admin typed it when it is a plain short one, else clipped
/// and quoted.
fn shown_key(k: &str) -> String {
    if !k.is_empty()
        && k.len() <= crate::text::CLIP_CHARS
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        clip(k).to_string()
    }
}
