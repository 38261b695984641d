//! Log setup: stderr always, plus `/dev/kmsg` when asked (the listener in an
//! initramfs), so messages reach the console and the journal of the booted
//! system. Only the listener asks: `keygen` and `check` run on the admin's
//! machine and must not write into its kernel log. Secrets never reach a log
//! call: the types that hold them have redacted `Debug` output.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

type Kmsg = Arc<Mutex<std::fs::File>>;

/// The kernel log, once [`init`] opened it.
static KMSG: OnceLock<Kmsg> = OnceLock::new();

#[derive(Clone)]
struct Tee {
    kmsg: Option<Kmsg>,
}

struct TeeWriter {
    kmsg: Option<Kmsg>,
    priority: u8,
    line: Vec<u8>,
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TeeWriter {
    fn drop(&mut self) {
        let _ = std::io::stderr().write_all(&self.line);
        if let Some(k) = &self.kmsg {
            to_kmsg(k, self.priority, &self.line);
        }
    }
}

/// One write per record: kmsg takes each write as one message. The
/// priority makes the journal show an error as an error.
fn to_kmsg(kmsg: &Kmsg, priority: u8, line: &[u8]) {
    if let Ok(mut f) = kmsg.lock() {
        let mut rec = format!("<{priority}>portcullisd: ").into_bytes();
        rec.extend_from_slice(line);
        let _ = f.write_all(&rec);
    }
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

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter;
    fn make_writer(&'a self) -> TeeWriter {
        TeeWriter {
            kmsg: self.kmsg.clone(),
            priority: 6,
            line: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> TeeWriter {
        TeeWriter {
            kmsg: self.kmsg.clone(),
            priority: priority(meta.level()),
            line: Vec::new(),
        }
    }
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
    let default = if verbose { "debug" } else { "info" };
    let filter: Targets = std::env::var("PORTCULLIS_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            format!("{default},russh=warn")
                .parse()
                .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
        });
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(Tee { kmsg })
                .with_ansi(false)
                .without_time()
                .with_target(false),
        )
        .with(filter)
        .try_init();
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
