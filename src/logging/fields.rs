//! How an event's or a span's fields become text, exactly as
//! tracing-subscriber's default `fmt` output (without colour) wrote them:
//! the message as written, then `key=value` separated by spaces, values in
//! their `Debug` form (so a `&str` is quoted and escaped, a `%display` value
//! is not), an error with its chain of sources. Terminal control
//! characters in the message and in errors are escaped; a newline is not
//! (see [`super`] on forged lines).

use std::error::Error;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};

/// Writes fields into `out`. A value whose `Debug` fails spoils the
/// record: the caller drops it, as `fmt` did.
pub(super) struct Fields<'a> {
    out: &'a mut String,
    empty: bool,
    pub(super) result: fmt::Result,
}

impl<'a> Fields<'a> {
    pub(super) fn new(out: &'a mut String) -> Self {
        Self {
            out,
            empty: true,
            result: Ok(()),
        }
    }
}

impl Visit for Fields<'_> {
    /// Without this, tracing's default formats through `f64`'s `Debug`,
    /// which links core's float printing (see [`super::float`]).
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_debug(field, &super::float::F64(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{} {}.sources={}",
                    Escaped(value),
                    field.name(),
                    Sources(source)
                ),
            ),
            None => self.record_debug(field, &format_args!("{}", Escaped(value))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if self.empty {
            self.empty = false;
        } else {
            self.out.push(' ');
        }
        let name = field.name();
        self.result = if name == "message" {
            write!(Escaping(self.out), "{value:?}")
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.out, "{name}={value:?}")
        };
    }
}

/// Passes text on with terminal control characters (ESC, BEL, BS, FF,
/// DEL, the C1 range) spelled out, so a message cannot drive the terminal
/// it is shown on. Other characters, newline and tab included, pass as is.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\x1b' => self.0.push_str("\\x1b"),
                '\x07' => self.0.push_str("\\x07"),
                '\x08' => self.0.push_str("\\x08"),
                '\x0c' => self.0.push_str("\\x0c"),
                '\x7f' => self.0.push_str("\\x7f"),
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// An error's `Display`, escaped as above.
struct Escaped<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write!(Escaping(&mut s), "{}", self.0)?;
        f.write_str(&s)
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `[first, its source, …]`, each escaped.
struct Sources<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(e) = next {
            list.entry(&Escaped(e));
            next = e.source();
        }
        list.finish()
    }
}
