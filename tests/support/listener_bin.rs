//! The `portcullisd` that tests running the listener as a process start: the
//! one cargo built for this test run, or the build `PORTCULLISD_BIN` names.
//! `PORTCULLIS_SMALL=1 tests/run-all.sh` sets it to the small release
//! listener, so its different panic, unwind and std code meets the same
//! contract tests as the stable build.

use std::path::PathBuf;

pub fn portcullisd() -> PathBuf {
    std::env::var_os("PORTCULLISD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_portcullisd").into())
}
