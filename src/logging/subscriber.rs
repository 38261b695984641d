//! The `tracing` subscriber: filters, keeps the spans alive while they are
//! in use, and turns each event into one line, the way the default `fmt`
//! layer of tracing-subscriber did (without time, target or colour):
//! `" INFO span{fields}:inner: message key=value"`. The line goes to a sink
//! in one call, so lines from several threads never mix.
//!
//! Spans are kept in a plain table behind a mutex: the code opens a handful
//! (`#[instrument]` on the unlock paths), not thousands.

use super::fields::Fields;
use super::filter::Filter;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::span::Current;

/// Where finished lines go: the level (for the kernel log's priority) and
/// the whole line, newline included.
pub(super) type Sink = Box<dyn Fn(&Level, &[u8]) + Send + Sync>;

struct SpanData {
    meta: &'static Metadata<'static>,
    /// `key=value …` as the line shows it between braces.
    fields: String,
    parent: Option<Id>,
    /// Handles, entries and children holding the span open.
    refs: usize,
}

/// Each subscriber's entries on a thread's stack carry its number, so two
/// subscribers (tests compare against a reference) never see each other's.
static SERIAL: AtomicU64 = AtomicU64::new(1);

struct Entry {
    owner: u64,
    id: Id,
    /// Entered again while already entered: leaving it does not close it.
    again: bool,
}

thread_local! {
    /// The spans entered on this thread, innermost last.
    static STACK: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

pub(super) struct LineSubscriber {
    filter: Filter,
    sink: Sink,
    serial: u64,
    /// Slot `i` holds span id `i + 1`; freed slots are reused.
    spans: Mutex<Vec<Option<SpanData>>>,
}

impl LineSubscriber {
    pub(super) fn new(filter: Filter, sink: Sink) -> Self {
        Self {
            filter,
            sink,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            spans: Mutex::new(Vec::new()),
        }
    }

    /// Spans still held open (tests: none may leak).
    #[cfg(test)]
    pub(super) fn open_spans(&self) -> usize {
        self.table().iter().flatten().count()
    }

    fn table(&self) -> MutexGuard<'_, Vec<Option<SpanData>>> {
        // A panic elsewhere while holding the lock leaves consistent data.
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The innermost span this thread has entered, if it is still open.
    fn current(&self) -> Option<Id> {
        let id = STACK
            .try_with(|s| {
                s.borrow()
                    .iter()
                    .rev()
                    .find(|e| e.owner == self.serial && !e.again)
                    .map(|e| e.id.clone())
            })
            .ok()??;
        let open = slot(&id).and_then(|i| self.table().get(i).map(Option::is_some));
        open.unwrap_or(false).then_some(id)
    }

    /// `outer{a=1}:inner: ` for the span `leaf` and its parents.
    fn scope(&self, leaf: Option<Id>, line: &mut String) {
        let table = self.table();
        let mut chain = Vec::new();
        let mut next = leaf;
        while let Some(span) = next.as_ref().and_then(|id| lookup(&table, id)) {
            // Parents are older and held open by their children, so this
            // ends; the bound keeps it so even for a forged parent id.
            if chain.len() >= table.len() {
                break;
            }
            chain.push(span);
            next = span.parent.clone();
        }
        for span in chain.iter().rev() {
            line.push_str(span.meta.name());
            if !span.fields.is_empty() {
                line.push('{');
                line.push_str(&span.fields);
                line.push('}');
            }
            line.push(':');
        }
        if !chain.is_empty() {
            line.push(' ');
        }
    }
}

fn slot(id: &Id) -> Option<usize> {
    usize::try_from(id.into_u64().checked_sub(1)?).ok()
}

fn lookup<'t>(table: &'t [Option<SpanData>], id: &Id) -> Option<&'t SpanData> {
    table.get(slot(id)?)?.as_ref()
}

/// The level as `fmt` printed it: five columns, right-aligned.
fn level_text(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        _ => "TRACE",
    }
}

impl Subscriber for LineSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.filter.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.filter.enabled(meta)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.filter.max_level())
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = String::new();
        let mut v = Fields::new(&mut fields);
        attrs.record(&mut v);
        if v.result.is_err() {
            fields.clear();
        }
        let parent = if attrs.is_root() {
            None
        } else if let Some(p) = attrs.parent() {
            Some(p.clone())
        } else {
            self.current()
        };
        let mut table = self.table();
        // The child holds its parent open.
        if let Some(p) = parent.as_ref().and_then(slot) {
            if let Some(Some(p)) = table.get_mut(p) {
                p.refs += 1;
            }
        }
        let data = SpanData {
            meta: attrs.metadata(),
            fields,
            parent,
            refs: 1,
        };
        let i = match table.iter().position(Option::is_none) {
            Some(i) => {
                if let Some(s) = table.get_mut(i) {
                    *s = Some(data);
                }
                i
            }
            None => {
                table.push(Some(data));
                table.len() - 1
            }
        };
        Id::from_u64(i as u64 + 1)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        // Formatted before taking the lock: a value's `Debug` may log.
        let mut more = String::new();
        values.record(&mut Fields::new(&mut more));
        let mut table = self.table();
        let Some(Some(data)) = slot(span).and_then(|i| table.get_mut(i)) else {
            return;
        };
        if !data.fields.is_empty() {
            data.fields.push(' ');
        }
        data.fields.push_str(&more);
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = String::new();
        line.push_str(level_text(meta.level()));
        line.push(' ');
        let leaf = if event.is_root() {
            None
        } else if let Some(p) = event.parent() {
            Some(p.clone())
        } else {
            self.current()
        };
        self.scope(leaf, &mut line);
        let mut v = Fields::new(&mut line);
        event.record(&mut v);
        if v.result.is_err() {
            return;
        }
        line.push('\n');
        (self.sink)(meta.level(), line.as_bytes());
    }

    fn enter(&self, span: &Id) {
        let again = STACK
            .try_with(|s| {
                let mut s = s.borrow_mut();
                let again = s.iter().any(|e| e.owner == self.serial && e.id == *span);
                s.push(Entry {
                    owner: self.serial,
                    id: span.clone(),
                    again,
                });
                again
            })
            .unwrap_or(true);
        if !again {
            self.clone_span(span);
        }
    }

    fn exit(&self, span: &Id) {
        let first = STACK
            .try_with(|s| {
                let mut s = s.borrow_mut();
                let at = s
                    .iter()
                    .rposition(|e| e.owner == self.serial && e.id == *span)?;
                Some(!s.remove(at).again)
            })
            .ok()
            .flatten();
        if first == Some(true) {
            self.try_close(span.clone());
        }
    }

    fn current_span(&self) -> Current {
        let Some(id) = self.current() else {
            return Current::none();
        };
        match slot(&id).and_then(|i| self.table().get(i).and_then(|s| s.as_ref().map(|s| s.meta))) {
            Some(meta) => Current::new(id, meta),
            None => Current::none(),
        }
    }

    fn clone_span(&self, span: &Id) -> Id {
        let mut table = self.table();
        if let Some(Some(data)) = slot(span).and_then(|i| table.get_mut(i)) {
            data.refs += 1;
        }
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let mut table = self.table();
        let mut next = Some(span);
        let mut closed_first = None;
        // Closing a span releases its hold on its parent, which may close
        // in turn.
        while let Some(id) = next.take() {
            let Some(i) = slot(&id) else { break };
            let Some(cell) = table.get_mut(i) else { break };
            let Some(data) = cell.as_mut() else { break };
            data.refs = data.refs.saturating_sub(1);
            let closed = data.refs == 0;
            if closed {
                next = cell.take().and_then(|d| d.parent);
            }
            closed_first.get_or_insert(closed);
        }
        closed_first.unwrap_or(false)
    }
}
