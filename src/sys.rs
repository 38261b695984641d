//! The only place that executes programs or touches system paths directly.
//!
//! Everything privileged goes through [`Runner`] (exec) and [`Root`] (a path
//! prefix), so the logic above can be tested against a recording fake and a
//! temporary directory tree without root. No policy lives here.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a finished program left behind.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Last non-empty line of stderr, trimmed, at most 200 characters: enough
    /// to say what went wrong on one line.
    pub fn stderr_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        text.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .chars()
            .take(200)
            .collect()
    }
}

/// Runs external programs.
pub trait Runner: Send + Sync {
    /// Runs `program` with `args`, feeds `stdin` (if any) and closes it, and
    /// waits. `Ok` whatever the exit status; `Err` only when the program could
    /// not be started or waited for. Secrets go in `stdin`, never in `args`.
    fn run(&self, program: &Path, args: &[String], stdin: Option<&[u8]>) -> io::Result<Output>;
}

/// The real thing: `std::process::Command` with an empty environment, so no
/// inherited variable changes what cryptsetup does.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &Path, args: &[String], stdin: Option<&[u8]>) -> io::Result<Output> {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("starting {}: {e}", program.display()))
            })?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A program that exits before reading everything closes the pipe;
            // its exit status tells what happened, so a broken pipe is not fatal.
            match pipe.write_all(data) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
        }
        let out = child.wait_with_output()?;
        Ok(Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// A root directory prefix: `/` in production, a temporary tree in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Default for Root {
    fn default() -> Self {
        Root(PathBuf::from("/"))
    }
}

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Root(path.into())
    }

    /// `path` (absolute, as seen by the system) under this root.
    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        let p = path.as_ref();
        self.0.join(p.strip_prefix("/").unwrap_or(p))
    }

    pub fn is_real(&self) -> bool {
        self.0 == Path::new("/")
    }
}

/// Reads at most `max` bytes from the start of a file.
pub fn read_head(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(max);
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_join() {
        let r = Root::new("/tmp/x");
        assert_eq!(
            r.join("/proc/cmdline"),
            PathBuf::from("/tmp/x/proc/cmdline")
        );
        assert_eq!(Root::default().join("/dev/vda"), PathBuf::from("/dev/vda"));
    }

    #[test]
    fn runner_feeds_stdin_and_reports_status() {
        let out = SystemRunner
            .run(
                Path::new("/bin/sh"),
                &["-c".into(), "cat; exit 3".into()],
                Some(b"abc"),
            )
            .unwrap();
        assert_eq!(out.stdout, b"abc");
        assert_eq!(out.code, Some(3));
        let err = SystemRunner
            .run(Path::new("/nonexistent/prog"), &[], None)
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
    }

    #[test]
    fn stderr_line_takes_last() {
        let o = Output {
            code: Some(1),
            stdout: vec![],
            stderr: b"first\n  second  \n\n".to_vec(),
        };
        assert_eq!(o.stderr_line(), "second");
    }
}
