//! A hand-written reader for the part of TOML that `portcullisd.toml` uses,
//! so the listener links neither the `toml` crate nor serde (about 35 KB of
//! its zstd size). It owns turning text into a tree of [`Node`]s; what the
//! keys mean is `config.rs`'s business.
//!
//! Accepted: comments; bare, quoted and dotted keys; basic strings with
//! TOML's escapes and literal strings, single-line; decimal integers (`_`
//! between digits, a sign); booleans; arrays (several lines, a trailing
//! comma, comments inside); `[table]` and `[[array-of-tables]]`, with TOML's
//! rules on defining a table or a key twice. Refused with one line naming
//! the line: floats, dates and times, inline tables, multi-line strings,
//! hexadecimal, octal and binary integers, and arrays nested more than
//! [`MAX_DEPTH`] deep. Every message clips what it quotes
//! ([`crate::text::clip`]).
//!
//! The differential tests in `toml_subset/tests.rs` hold it to the `toml`
//! crate's answers.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::text::clip;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

/// Deepest array nesting, and most parts in one key or header: bounds the
/// parser's recursion and the walk from the root to the current table.
pub const MAX_DEPTH: usize = 32;

/// A value and the line it starts on (for a table from a header: the
/// header's line).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// `[a, b]` written as a value.
    Array(Vec<Node>),
    Table(Table),
    /// `[[name]]` tables, in order.
    Tables(Vec<Table>),
}

/// How a table came to be: TOML lets a header define a table only once,
/// and only if dotted keys did not define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The root, or a `[header]` / `[[header]]` table.
    Header,
    /// Named only as the parent in a header (`a` of `[a.b]`): a later
    /// `[a]` may still define it.
    Implicit,
    /// Made by a dotted key (`a.b = 1` makes `a`).
    Dotted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The header's line; 0 for the root.
    pub line: usize,
    pub entries: BTreeMap<String, Node>,
    kind: Kind,
}

impl Default for Table {
    /// An empty table, as for a section the file leaves out.
    fn default() -> Self {
        Table::new(0, Kind::Header)
    }
}

impl Table {
    fn new(line: usize, kind: Kind) -> Self {
        Table {
            line,
            entries: BTreeMap::new(),
            kind,
        }
    }
}

/// What went wrong and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

type Parsed<T> = Result<T, ParseError>;

/// Parses a whole document into its root table.
pub fn parse(text: &str) -> Parsed<Table> {
    // TOML allows a byte-order mark; editors on Windows write one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        src: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
    };
    let mut root = Table::new(0, Kind::Header);
    // Keys from the root to the table that key = value lines go to.
    let mut current: Vec<String> = Vec::new();
    loop {
        p.skip_ws();
        match p.peek() {
            None => break,
            Some(b'[') => {
                let line = p.line;
                let (keys, array) = p.header()?;
                open_table(&mut root, &keys, array, line).map_err(|msg| p.err_at(line, msg))?;
                current = keys;
            }
            Some(b'#' | b'\r' | b'\n') => {}
            Some(_) => {
                let line = p.line;
                let keys = p.key()?;
                p.skip_ws();
                if !p.eat(b'=') {
                    return Err(p.err(format!(
                        "expected `=` after the key {}; write key = value",
                        shown(&keys)
                    )));
                }
                p.skip_ws();
                let value = p.value(&keys, 0)?;
                let table = table_at(&mut root, &current)
                    .ok_or_else(|| p.err_at(line, "internal: the current table is gone".into()))?;
                insert(table, &keys, Node { line, value }).map_err(|msg| p.err_at(line, msg))?;
            }
        }
        p.end_of_line()?;
    }
    Ok(root)
}

/// The table `path` names, following the last table of each `[[array]]`.
fn table_at<'t>(root: &'t mut Table, path: &[String]) -> Option<&'t mut Table> {
    let mut t = root;
    for k in path {
        t = match t.entries.get_mut(k).map(|n| &mut n.value) {
            Some(Value::Table(x)) => x,
            Some(Value::Tables(v)) => v.last_mut()?,
            _ => return None,
        };
    }
    Some(t)
}

/// `[keys]` or `[[keys]]` at `line`: creates the table (or appends one to
/// the array), after TOML's rules on what may be defined twice.
fn open_table(root: &mut Table, keys: &[String], array: bool, line: usize) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else {
        return Err("an empty table header".into());
    };
    let mut t = root;
    for (i, k) in parents.iter().enumerate() {
        let node = t.entries.entry(k.clone()).or_insert_with(|| Node {
            line,
            value: Value::Table(Table::new(line, Kind::Implicit)),
        });
        t = match &mut node.value {
            Value::Table(x) => x,
            Value::Tables(v) => match v.last_mut() {
                Some(x) => x,
                None => {
                    return Err(format!(
                        "{} is not a table",
                        shown(keys.get(..=i).unwrap_or(keys))
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "{} is a value, not a table; rename one of them",
                    shown(keys.get(..=i).unwrap_or(keys))
                ))
            }
        };
    }
    let name = shown(keys);
    match t.entries.entry(last.clone()) {
        Entry::Vacant(e) => {
            let table = Table::new(line, Kind::Header);
            let value = if array {
                Value::Tables(vec![table])
            } else {
                Value::Table(table)
            };
            e.insert(Node { line, value });
            Ok(())
        }
        Entry::Occupied(mut e) => {
            let first = e.get().line;
            match (&mut e.get_mut().value, array) {
                (Value::Tables(v), true) => {
                    v.push(Table::new(line, Kind::Header));
                    Ok(())
                }
                (Value::Table(x), false) if x.kind == Kind::Implicit => {
                    x.kind = Kind::Header;
                    x.line = line;
                    Ok(())
                }
                (Value::Table(_), false) => Err(format!(
                    "[{name}] is defined twice (first on line {first}); merge the two"
                )),
                _ => Err(format!(
                    "{name} is already defined on line {first} as something else; rename one of them"
                )),
            }
        }
    }
}

/// `keys = value` into `table`: dotted keys make (or extend) tables of
/// their own, never a header's table or a value.
fn insert(table: &mut Table, keys: &[String], node: Node) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else {
        return Err("an empty key".into());
    };
    let line = node.line;
    let mut t = table;
    for (i, k) in parents.iter().enumerate() {
        let entry = t.entries.entry(k.clone()).or_insert_with(|| Node {
            line,
            value: Value::Table(Table::new(line, Kind::Dotted)),
        });
        let first = entry.line;
        t = match &mut entry.value {
            Value::Table(x) if x.kind == Kind::Dotted => x,
            _ => {
                return Err(format!(
                    "{} is already defined on line {first}; a dotted key cannot add to it",
                    shown(keys.get(..=i).unwrap_or(keys))
                ))
            }
        };
    }
    match t.entries.entry(last.clone()) {
        Entry::Vacant(e) => {
            e.insert(node);
            Ok(())
        }
        Entry::Occupied(e) => Err(format!(
            "{} is defined twice (first on line {}); keep one",
            shown(keys),
            e.get().line
        )),
    }
}

/// A key as written (`a.b`), each part clipped.
fn shown(keys: &[String]) -> String {
    keys.iter()
        .map(|k| {
            if !k.is_empty() && k.len() <= 64 && k.bytes().all(bare) {
                k.clone()
            } else {
                clip(k).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Characters TOML allows nowhere but as escapes: controls other than tab.
fn control(c: char) -> bool {
    (c < ' ' && c != '\t') || c == '\u{7f}'
}

struct Parser<'a> {
    text: &'a str,
    src: &'a [u8],
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn rest(&self) -> &str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn err(&self, msg: String) -> ParseError {
        self.err_at(self.line, msg)
    }

    fn err_at(&self, line: usize, msg: String) -> ParseError {
        ParseError { line, msg }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// A comment, if any, then the end of the line (LF or CRLF) or of the
    /// text.
    fn end_of_line(&mut self) -> Parsed<()> {
        self.skip_ws();
        self.comment()?;
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.pos += 1;
                self.line += 1;
                Ok(())
            }
            Some(b'\r') if self.src.get(self.pos + 1) == Some(&b'\n') => {
                self.pos += 2;
                self.line += 1;
                Ok(())
            }
            Some(b'\r') => Err(self.err(
                "a carriage return without a line feed; save the file with LF or CRLF line endings"
                    .into(),
            )),
            Some(_) => Err(self.err(format!(
                "unexpected {} here; put one key = value or [table] per line",
                clip(&self.rest().chars().take(16).collect::<String>())
            ))),
        }
    }

    fn comment(&mut self) -> Parsed<()> {
        if !self.eat(b'#') {
            return Ok(());
        }
        let line = self.rest().split('\n').next().unwrap_or("");
        let body = line.strip_suffix('\r').unwrap_or(line);
        if let Some(c) = body.chars().find(|&c| control(c)) {
            return Err(self.err(format!(
                "control character U+{:04X} in a comment; remove it",
                u32::from(c)
            )));
        }
        self.pos += body.len();
        Ok(())
    }

    /// Whitespace, newlines and comments, inside an array.
    fn skip_blank(&mut self) -> Parsed<()> {
        loop {
            self.skip_ws();
            self.comment()?;
            match self.peek() {
                Some(b'\n' | b'\r') => self.end_of_line()?,
                _ => return Ok(()),
            }
        }
    }

    /// `[a.b]` or `[[a.b]]`: the keys, and whether it is an array's.
    fn header(&mut self) -> Parsed<(Vec<String>, bool)> {
        self.pos += 1;
        let array = self.eat(b'[');
        self.skip_ws();
        let keys = self.key()?;
        self.skip_ws();
        let closed = if array {
            self.rest().starts_with("]]")
        } else {
            self.peek() == Some(b']')
        };
        if !closed {
            let want = if array { "]]" } else { "]" };
            return Err(self.err(format!(
                "the table header [{}{} needs a closing {want}",
                if array { "[" } else { "" },
                shown(&keys)
            )));
        }
        self.pos += if array { 2 } else { 1 };
        Ok((keys, array))
    }

    /// `a`, `"a b"`, `'a'`, or dotted: `a."b".c`.
    fn key(&mut self) -> Parsed<Vec<String>> {
        let mut keys = Vec::new();
        loop {
            self.skip_ws();
            if keys.len() == MAX_DEPTH {
                return Err(self.err(format!(
                    "a key of more than {MAX_DEPTH} parts; portcullisd.toml needs at most 2"
                )));
            }
            keys.push(self.simple_key()?);
            self.skip_ws();
            if !self.eat(b'.') {
                return Ok(keys);
            }
        }
    }

    fn simple_key(&mut self) -> Parsed<String> {
        match self.peek() {
            Some(b'"') if !self.rest().starts_with("\"\"\"") => self.basic_string(),
            Some(b'\'') if !self.rest().starts_with("'''") => self.literal_string(),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(bare) {
                    self.pos += 1;
                }
                let key = self.text.get(start..self.pos).unwrap_or("");
                if key.is_empty() {
                    let found: String = self.rest().chars().take(16).collect();
                    return Err(self.err(format!(
                        "expected a key (letters, digits, '-', '_', or quoted), found {}",
                        clip(&found)
                    )));
                }
                Ok(key.to_owned())
            }
        }
    }

    /// A value for `keys`, `depth` arrays deep.
    fn value(&mut self, keys: &[String], depth: usize) -> Parsed<Value> {
        let rest = self.rest();
        match self.peek() {
            Some(b'"') if rest.starts_with("\"\"\"") => Err(self.unsupported(
                keys,
                "multi-line strings are not supported in portcullisd.toml; write the string on one line",
            )),
            Some(b'\'') if rest.starts_with("'''") => Err(self.unsupported(
                keys,
                "multi-line strings are not supported in portcullisd.toml; write the string on one line",
            )),
            Some(b'"') => self.basic_string().map(Value::Str),
            Some(b'\'') => self.literal_string().map(Value::Str),
            Some(b'[') => self.array(keys, depth + 1),
            Some(b'{') => {
                let name = shown(keys);
                Err(self.err(format!(
                    "{name} = {{…}}: inline tables are not supported in portcullisd.toml; \
                     write [{name}] as a table"
                )))
            }
            None | Some(b'\n' | b'\r' | b'#') => Err(self.err(format!(
                "{} = needs a value on the same line",
                shown(keys)
            ))),
            Some(_) => self.scalar(keys),
        }
    }

    fn unsupported(&self, keys: &[String], what: &str) -> ParseError {
        self.err(format!("{} = …: {what}", shown(keys)))
    }

    /// Booleans and numbers: one run of the characters they are made of.
    fn scalar(&mut self, keys: &[String]) -> Parsed<Value> {
        let start = self.pos;
        while self.peek().is_some_and(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.' | b':')
        }) {
            self.pos += 1;
        }
        let tok = self.text.get(start..self.pos).unwrap_or("");
        match tok {
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        let digits = tok.trim_start_matches(['+', '-']);
        // 1979-05-27…, or 07:32:00…
        let digits_then = |n: usize, sep: u8| {
            tok.as_bytes().get(n) == Some(&sep) && tok.bytes().take(n).all(|b| b.is_ascii_digit())
        };
        let is_date = digits_then(4, b'-') || digits_then(2, b':');
        let bad = |what: &str| {
            Err(self.err_at(
                self.line,
                format!("{} = {}: {what}", shown(keys), clip(tok)),
            ))
        };
        if tok.is_empty() {
            let found: String = self.rest().chars().take(16).collect();
            return Err(self.err(format!(
                "{} = {}: not a value; quote strings (\"…\"), write numbers in decimal, true or false",
                shown(keys),
                clip(&found)
            )));
        }
        if is_date {
            return bad("dates and times are not supported in portcullisd.toml");
        }
        if ["0x", "0o", "0b"].iter().any(|p| digits.starts_with(p)) {
            return bad("hexadecimal, octal and binary numbers are not supported in portcullisd.toml; write it in decimal");
        }
        if digits.starts_with(|c: char| c.is_ascii_digit()) && (tok.contains(['.', 'e', 'E']))
            || digits == "inf"
            || digits == "nan"
        {
            return bad("floats are not supported in portcullisd.toml; write a whole number");
        }
        if !digits.starts_with(|c: char| c.is_ascii_digit()) {
            return bad(
                "not a value; quote strings (\"…\"), write numbers in decimal, true or false",
            );
        }
        let plain: String = digits.chars().filter(|&c| c != '_').collect();
        let underscores_ok = !digits.starts_with('_')
            && !digits.ends_with('_')
            && !digits.contains("__")
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
        if !underscores_ok
            || (plain.len() > 1 && plain.starts_with('0'))
            || tok.len() - digits.len() > 1
        {
            return bad("not a decimal integer (digits, `_` only between digits, no leading zero)");
        }
        let sign = if tok.starts_with('-') { "-" } else { "" };
        match format!("{sign}{plain}").parse::<i64>() {
            Ok(n) => Ok(Value::Int(n)),
            Err(_) => bad("out of range for a 64-bit integer"),
        }
    }

    /// `[a, b, …]`: newlines, comments and a trailing comma allowed.
    fn array(&mut self, keys: &[String], depth: usize) -> Parsed<Value> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!(
                "{} = …: arrays nested more than {MAX_DEPTH} deep are not supported",
                shown(keys)
            )));
        }
        let open = self.line;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            if self.peek().is_none() {
                return Err(self.err_at(
                    open,
                    format!("{} = [: the array is not closed; add a ]", shown(keys)),
                ));
            }
            let line = self.line;
            let value = self.value(keys, depth)?;
            items.push(Node { line, value });
            self.skip_blank()?;
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(b',') {
                if self.peek().is_none() {
                    return Err(self.err_at(
                        open,
                        format!("{} = [: the array is not closed; add a ]", shown(keys)),
                    ));
                }
                let found: String = self.rest().chars().take(16).collect();
                return Err(self.err(format!(
                    "{} = [: expected `,` or `]` between values, found {}",
                    shown(keys),
                    clip(&found)
                )));
            }
        }
    }

    /// `"…"` with TOML's escapes.
    fn basic_string(&mut self) -> Parsed<String> {
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        loop {
            let Some((i, c)) = chars.next() else {
                return Err(self.err("a string is not closed; add the closing \"".into()));
            };
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let Some((_, e)) = chars.next() else {
                        return Err(self.err("a string is not closed; add the closing \"".into()));
                    };
                    let hex = match e {
                        'b' => {
                            out.push('\u{8}');
                            continue;
                        }
                        't' => {
                            out.push('\t');
                            continue;
                        }
                        'n' => {
                            out.push('\n');
                            continue;
                        }
                        'f' => {
                            out.push('\u{c}');
                            continue;
                        }
                        'r' => {
                            out.push('\r');
                            continue;
                        }
                        '"' | '\\' => {
                            out.push(e);
                            continue;
                        }
                        'u' => 4,
                        'U' => 8,
                        _ => {
                            return Err(self.err(format!(
                                "unknown escape \\{} in a string; write \\\\ for a backslash",
                                e.escape_debug()
                            )))
                        }
                    };
                    let mut code: u32 = 0;
                    for _ in 0..hex {
                        let digit = chars.next().and_then(|(_, h)| h.to_digit(16));
                        let Some(d) = digit else {
                            return Err(self
                                .err(format!("\\{e} needs {hex} hexadecimal digits in a string")));
                        };
                        code = code.wrapping_mul(16).wrapping_add(d);
                    }
                    match char::from_u32(code) {
                        Some(ch) => out.push(ch),
                        None => {
                            return Err(self.err(format!(
                                "\\{e}{code:0width$X} is not a Unicode scalar value (a surrogate or too large)",
                                width = hex
                            )))
                        }
                    }
                }
                '\n' => {
                    return Err(
                        self.err("a string is not closed on its line; add the closing \"".into())
                    )
                }
                c if control(c) => {
                    return Err(self.err(format!(
                        "control character U+{:04X} in a string; write it as \\u{:04X}",
                        u32::from(c),
                        u32::from(c)
                    )))
                }
                c => out.push(c),
            }
        }
    }

    /// `'…'`: no escapes.
    fn literal_string(&mut self) -> Parsed<String> {
        self.pos += 1;
        let rest = self.rest();
        let Some(end) = rest.find(['\'', '\n']) else {
            return Err(self.err("a string is not closed; add the closing '".into()));
        };
        let body = rest.get(..end).unwrap_or("");
        if rest.get(end..).is_some_and(|r| r.starts_with('\n')) {
            return Err(self.err("a string is not closed on its line; add the closing '".into()));
        }
        if let Some(c) = body.chars().find(|&c| control(c)) {
            return Err(self.err(format!(
                "control character U+{:04X} in a literal string; use a \"…\" string with \\u{:04X}",
                u32::from(c),
                u32::from(c)
            )));
        }
        let s = body.to_owned();
        self.pos += end + 1;
        Ok(s)
    }
}

#[cfg(test)]
pub(crate) mod tests;
