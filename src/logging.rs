//! Log setup: stderr always, plus `/dev/kmsg` in an initramfs so messages
//! reach the console and the journal of the booted system. Secrets never
//! reach a log call: the types that hold them have redacted `Debug` output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

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
/// `PORTCULLIS_LOG` (e.g. `debug`) overrides the level.
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},russh=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Tee { kmsg })
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
