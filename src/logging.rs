//! Log setup: stderr always, plus `/dev/kmsg` in an initramfs so messages
//! reach the console and the journal of the booted system. Secrets never
//! reach a log call: the types that hold them have redacted `Debug` output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone)]
struct Tee {
    kmsg: Option<Arc<Mutex<std::fs::File>>>,
}

struct TeeWriter {
    kmsg: Option<Arc<Mutex<std::fs::File>>>,
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
            if let Ok(mut f) = k.lock() {
                // One write per record: kmsg takes each write as one message.
                let mut rec = b"<6>portcullisd: ".to_vec();
                rec.extend_from_slice(&self.line);
                let _ = f.write_all(&rec);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter;
    fn make_writer(&'a self) -> TeeWriter {
        TeeWriter {
            kmsg: self.kmsg.clone(),
            line: Vec::new(),
        }
    }
}

/// Initializes logging. `kmsg` adds `/dev/kmsg` when it can be opened.
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
