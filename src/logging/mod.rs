//! Log setup: stderr always, plus `/dev/kmsg` when asked (the listener in an
//! initramfs), so messages reach the console and the journal of the booted
//! system. Only the listener asks: `keygen` and `check` run on the admin's
//! machine and must not write into its kernel log. Secrets never reach a log
//! call: the types that hold them have redacted `Debug` output.
//!
//! A small subscriber of our own ([`subscriber`]) writes the lines that
//! tracing-subscriber's `fmt` layer wrote before (about 27 KB of the
//! listener went to that crate and its helpers); `filter` reads
//! `PORTCULLIS_LOG` as its `Targets` did. As before, a newline in a message
//! or a `%display` field is written as is (only terminal escapes are
//! spelled out), so text a client controls is escaped before it is logged
//! (`listener::shown`) or logged as `?value`, which quotes it.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod fields;
mod filter;
mod float;
mod subscriber;
#[cfg(test)]
mod tests;

use filter::Filter;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use subscriber::{LineSubscriber, Sink};
use tracing::Level;

type Kmsg = Arc<Mutex<std::fs::File>>;

/// The kernel log, once [`init`] opened it.
static KMSG: OnceLock<Kmsg> = OnceLock::new();

/// One write per record: kmsg takes each write as one message. The
/// priority makes the journal show an error as an error.
fn to_kmsg(kmsg: &Kmsg, priority: u8, line: &[u8]) {
    if let Ok(mut f) = kmsg.lock() {
        let _ = f.write_all(&kmsg_record(priority, line));
    }
}

/// The longest write `/dev/kmsg` takes: the kernel refuses a longer one
/// whole (EINVAL), so the line would be missing from `dmesg`. 6.18 takes
/// 1024 bytes and refuses 1025 (measured); older kernels stop at 992
/// (`LOG_LINE_MAX`: 1024 less a 32-byte prefix allowance).
const KMSG_MAX: usize = 992;

/// Ends a record that had to be cut; stderr has the whole line.
const KMSG_CUT: &[u8] = " [cut: the whole line is on stderr]\n".as_bytes();

/// `<priority>portcullisd: ` and the line, cut to [`KMSG_MAX`] bytes (on a
/// character boundary) when it is longer.
fn kmsg_record(priority: u8, line: &[u8]) -> Vec<u8> {
    let mut rec = format!("<{priority}>portcullisd: ").into_bytes();
    let room = KMSG_MAX.saturating_sub(rec.len());
    if line.len() <= room {
        rec.extend_from_slice(line);
        return rec;
    }
    let mut keep = room.saturating_sub(KMSG_CUT.len());
    // Back off to the start of a UTF-8 character (not a continuation byte).
    while keep > 0 && line.get(keep).is_some_and(|b| b & 0xc0 == 0x80) {
        keep -= 1;
    }
    rec.extend_from_slice(line.get(..keep).unwrap_or_default());
    rec.extend_from_slice(KMSG_CUT);
    rec
}

/// syslog priorities: err, warning, info, debug.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The filter for a `PORTCULLIS_LOG` value: the value when it parses, else
/// the standard one (`info,russh=warn`, `debug,…` with `verbose`).
fn filter(value: Option<&str>, verbose: bool) -> Filter {
    value
        .and_then(Filter::parse)
        .unwrap_or_else(|| Filter::standard(if verbose { Level::DEBUG } else { Level::INFO }))
}

/// Writes a line to stderr (and the kernel log): the whole line in one
/// `write_all`, under stderr's lock, so threads do not interleave.
fn sink(kmsg: Option<Kmsg>) -> Sink {
    Box::new(move |level, line| {
        let _ = std::io::stderr().write_all(line);
        if let Some(k) = &kmsg {
            to_kmsg(k, priority(level), line);
        }
    })
}

/// Initializes logging. `kmsg` adds `/dev/kmsg` when it can be opened: only
/// the listener in an initramfs asks for it.
/// `PORTCULLIS_LOG` (`debug`, or per target: `info,portcullis=trace`)
/// overrides the level. A plain target list rather than an `EnvFilter`:
/// the regex engine behind the latter would add ~0.5 MB to every initramfs.
pub fn init(kmsg: bool, verbose: bool) {
    let kmsg = kmsg
        .then(|| {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .ok()
        })
        .flatten()
        .map(|f| Arc::new(Mutex::new(f)));
    if let Some(k) = &kmsg {
        let _ = KMSG.set(k.clone());
    }
    let value = std::env::var("PORTCULLIS_LOG").ok();
    let filter = filter(value.as_deref(), verbose);
    let _ = tracing::subscriber::set_global_default(LineSubscriber::new(filter, sink(kmsg)));
}

/// The listener's own subscriber, at the level `PORTCULLIS_LOG=value`
/// gives, writing each line to `sink` instead of stderr: for tests that
/// must search exactly what the listener would write (tests/redaction.rs).
#[doc(hidden)]
pub fn subscriber_with_sink(
    value: &str,
    sink: impl Fn(&[u8]) + Send + Sync + 'static,
) -> impl tracing::Subscriber + Send + Sync {
    LineSubscriber::new(
        filter(Some(value), false),
        Box::new(move |_, line| sink(line)),
    )
}

/// The error a command ends with, printed once: `portcullisd: error: …` on
/// stderr, and into the kernel log as an error when [`init`] opened it.
/// (Logging it through tracing as well printed it twice on stderr.)
pub fn final_error(msg: &str) {
    let line = format!("portcullisd: error: {msg}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(k) = KMSG.get() {
        to_kmsg(k, 3, format!("error: {msg}\n").as_bytes());
    }
}
