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

/// The initramfs build (listen only) that the image hooks copy in, or the
/// build `PORTCULLISD_INITRAMFS_BIN` names.
#[allow(dead_code)] // only tests/initramfs_build.rs starts it
pub fn portcullisd_initramfs() -> PathBuf {
    std::env::var_os("PORTCULLISD_INITRAMFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_portcullisd-initramfs").into())
}

/// Writes `DIR/portcullisd.toml` for a listener on 127.0.0.1:`port` with
/// `DIR/host_key` and `DIR/authorized_keys`, whose one volume is never
/// opened (cryptsetup is /bin/false); returns its path.
#[allow(dead_code)] // not every test file that includes this starts a listener
pub fn never_opened_config(dir: &std::path::Path, port: u16) -> PathBuf {
    let config = dir.join("portcullisd.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nhost-key = \"{d}/host_key\"\n\
             authorized-keys = \"{d}/authorized_keys\"\nbackend = \"cryptsetup\"\n\
             cryptsetup = \"/bin/false\"\nvolumes-from-cmdline = false\n\
             [[volume]]\nname = \"never-opened\"\ndevice = \"/dev/null\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    config
}

/// Starts the listener `bin` with `config`, under the standard log filter,
/// its stderr piped (for [`sigterm`]).
#[allow(dead_code)] // not every test file that includes this starts a listener
pub fn start(bin: &std::path::Path, config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .env_remove("PORTCULLIS_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The first connection to 127.0.0.1:`port` once the listener `child`
/// accepts; fails the test if it exits first or takes over 30 s.
#[allow(dead_code)] // not every test file that includes this starts a listener
pub fn first_connection(child: &mut std::process::Child, port: u16) -> std::net::TcpStream {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            return c;
        }
        assert!(child.try_wait().unwrap().is_none(), "the listener exited");
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never accepted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Stops `child` with SIGTERM; its exit status and its (piped) stderr,
/// read to the end before waiting so a full pipe cannot stall it.
#[allow(dead_code)] // not every test file that includes this starts a listener
pub fn sigterm(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: a plain kill(2) of the child the test started.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}
