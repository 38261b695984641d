//! russh logs through the `log` crate, and a `log` record with no logger
//! set is dropped: russh's warnings and errors (a peer that breaks the key
//! exchange, an unknown channel request) never reached the listener's log,
//! though the standard filter (`russh=warn`) was written to show them.
//! This logger hands each record to tracing under the target `russh`, so
//! `PORTCULLIS_LOG` decides about it like about everything else; the line
//! names the record's module (`russh::server::kex: …`).
//!
//! `log`'s own max level is set to what the filter gives `russh`, so the
//! per-packet `debug!` calls in russh cost one compare when they are off.
//! A directive for a russh module (`russh::server=debug`) does not reach
//! these records: they all carry the one target `russh`.

use super::filter::Filter;
use tracing::level_filters::LevelFilter;

/// The target the records are logged under.
const TARGET: &str = "russh";

pub(super) struct Bridge;

impl log::Log for Bridge {
    /// `log`'s macros have checked the max level already; the tracing
    /// filter decides the rest.
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // russh formats what a peer sent into some messages (`{x}` for an
        // unknown request name): one line, control characters escaped,
        // bounded, as for every other text a client controls.
        let text = crate::text::clip_message(&crate::text::line(&record.args().to_string()));
        let module = record.target();
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, "{module}: {text}"),
            log::Level::Warn => tracing::warn!(target: TARGET, "{module}: {text}"),
            log::Level::Info => tracing::info!(target: TARGET, "{module}: {text}"),
            log::Level::Debug => tracing::debug!(target: TARGET, "{module}: {text}"),
            log::Level::Trace => tracing::trace!(target: TARGET, "{module}: {text}"),
        }
    }

    fn flush(&self) {}
}

/// `log`'s level filter for tracing's.
fn log_level(level: LevelFilter) -> log::LevelFilter {
    match level {
        LevelFilter::OFF => log::LevelFilter::Off,
        LevelFilter::ERROR => log::LevelFilter::Error,
        LevelFilter::WARN => log::LevelFilter::Warn,
        LevelFilter::INFO => log::LevelFilter::Info,
        LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Sets the bridge as `log`'s logger, at the level `filter` gives russh.
/// Once per process; a later call only changes nothing.
pub(super) fn install(filter: &Filter) {
    if log::set_logger(&Bridge).is_ok() {
        log::set_max_level(log_level(filter.most_for(TARGET)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_one_to_one() {
        assert_eq!(log_level(LevelFilter::OFF), log::LevelFilter::Off);
        assert_eq!(log_level(LevelFilter::ERROR), log::LevelFilter::Error);
        assert_eq!(log_level(LevelFilter::WARN), log::LevelFilter::Warn);
        assert_eq!(log_level(LevelFilter::INFO), log::LevelFilter::Info);
        assert_eq!(log_level(LevelFilter::DEBUG), log::LevelFilter::Debug);
        assert_eq!(log_level(LevelFilter::TRACE), log::LevelFilter::Trace);
    }
}
