//! Which events and spans are logged: the `PORTCULLIS_LOG` syntax
//! (`info,portcullis=trace`), read the way tracing-subscriber's `Targets`
//! read it before we dropped that crate, so every value an operator may have
//! written keeps its meaning, odd corners included (`""` means `error`,
//! a word that is no level names a target at `trace`). No regex: the
//! listener lives in an initramfs.

use std::cmp::Ordering;
use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};

/// One comma-separated part: `target=level`, `target[{field,…}]=level`,
/// a bare level (the default) or a bare target (at `trace`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    target: Option<String>,
    fields: Vec<String>,
    level: LevelFilter,
}

impl Directive {
    /// `None` for a malformed part: the whole value is then refused.
    fn parse(s: &str) -> Option<Self> {
        let Some((left, level)) = s.split_once('=') else {
            // No `=`: a bare level, or else a bare target.
            return Some(match s.parse::<LevelFilter>() {
                Ok(level) => Self {
                    target: None,
                    fields: Vec::new(),
                    level,
                },
                Err(_) => Self {
                    target: Some(s.to_owned()),
                    fields: Vec::new(),
                    level: LevelFilter::TRACE,
                },
            });
        };
        if level.contains('=') {
            return None;
        }
        let mut parts = left.split("[{");
        let target = parts.next().unwrap_or_default().to_owned();
        let mut fields = Vec::new();
        if let Some(list) = parts.next() {
            if parts.next().is_some() || !list.ends_with("}]") {
                return None;
            }
            fields = list
                .trim_end_matches("}]")
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect();
        }
        Some(Self {
            target: Some(target),
            fields,
            level: level.parse().ok()?,
        })
    }

    /// A target is a prefix (`portcullis` also covers `portcullisd`); field
    /// names, for events only, must all be fields of the event.
    fn matches(&self, meta: &Metadata<'_>) -> bool {
        if let Some(t) = &self.target {
            if !meta.target().starts_with(t.as_str()) {
                return false;
            }
        }
        !meta.is_event()
            || self
                .fields
                .iter()
                .all(|f| meta.fields().field(f.as_str()).is_some())
    }
}

/// Most specific first: a longer target, then more field names; a directive
/// with a target before the default. Equal only for the same target and
/// fields, and then the later directive replaces the earlier.
impl Ord for Directive {
    fn cmp(&self, other: &Self) -> Ordering {
        self.target
            .as_ref()
            .map(String::len)
            .cmp(&other.target.as_ref().map(String::len))
            .then_with(|| self.fields.len().cmp(&other.fields.len()))
            .then_with(|| self.target.cmp(&other.target))
            .then_with(|| self.fields.cmp(&other.fields))
            .reverse()
    }
}

impl PartialOrd for Directive {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A parsed `PORTCULLIS_LOG`: the first (most specific) directive that
/// matches decides; with none matching, nothing is logged.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    directives: Vec<Directive>,
    max: LevelFilter,
}

impl Filter {
    /// `None` when any part is malformed.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut f = Self {
            directives: Vec::new(),
            max: LevelFilter::OFF,
        };
        for part in s.split(',') {
            f.add(Directive::parse(part)?);
        }
        Some(f)
    }

    /// What the listener and the client log without `PORTCULLIS_LOG`:
    /// `level` for everything, russh's own records only from `warn` up.
    pub(crate) fn standard(level: Level) -> Self {
        let mut f = Self {
            directives: Vec::new(),
            max: LevelFilter::OFF,
        };
        f.add(Directive {
            target: None,
            fields: Vec::new(),
            level: LevelFilter::from_level(level),
        });
        f.add(Directive {
            target: Some("russh".to_owned()),
            fields: Vec::new(),
            level: LevelFilter::WARN,
        });
        f
    }

    fn add(&mut self, d: Directive) {
        self.max = self.max.max(d.level);
        match self.directives.binary_search(&d) {
            Ok(i) => {
                if let Some(slot) = self.directives.get_mut(i) {
                    *slot = d;
                }
            }
            Err(i) => self.directives.insert(i, d),
        }
    }

    pub(crate) fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.directives
            .iter()
            .find(|d| d.matches(meta))
            .is_some_and(|d| d.level >= *meta.level())
    }

    /// The most verbose level any directive lets through.
    pub(crate) fn max_level(&self) -> LevelFilter {
        self.max
    }
}
