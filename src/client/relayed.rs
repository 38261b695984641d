//! `--via RELAY`: the transport to a listener that is reachable only
//! through its outbound relay. The stock OpenSSH client runs
//! `ssh -W 127.0.0.1:PORT RELAY`: it logs in to the relay with the admin's
//! own settings and checks the relay's host key against the admin's
//! known_hosts (failing closed), and hands over a byte pipe to the port the
//! listener asked the relay to listen on. Our SSH session to the listener
//! runs over that pipe, with the listener's own host key pinned as for a
//! direct connection: the relay carries ciphertext only.
//!
//! `PORTCULLIS_SSH` names another program called like `ssh` (as `GIT_SSH`
//! does), e.g. a wrapper adding `-F FILE`.

use anyhow::{Context, Result};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

/// Where the relay's forward listens: on the relay's loopback.
pub const FORWARD_HOST: &str = crate::relay::LISTEN_ON;

/// The pipes of a running `ssh -W`.
pub struct Piped {
    out: ChildStdout,
    inp: ChildStdin,
}

/// The ssh program: `PORTCULLIS_SSH`, else `ssh` from PATH.
fn program() -> std::ffi::OsString {
    std::env::var_os("PORTCULLIS_SSH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "ssh".into())
}

/// The arguments after the program. `--` ends ssh's options: `relay` was
/// already refused when it starts with `-`, this makes sure.
pub fn args(relay: &str, port: u16) -> Vec<String> {
    vec![
        "-W".into(),
        format!("{FORWARD_HOST}:{port}"),
        // The admin's ssh_config may forward ports for this host: not now.
        "-o".into(),
        "ClearAllForwardings=yes".into(),
        "--".into(),
        relay.into(),
    ]
}

/// Starts `ssh -W 127.0.0.1:PORT RELAY`. Its stderr is the admin's (ssh
/// says there why the relay failed); the receiver gets its exit status.
pub fn spawn(relay: &str, port: u16) -> Result<(Piped, oneshot::Receiver<Option<ExitStatus>>)> {
    let prog = program();
    let mut child = Command::new(&prog)
        .args(args(relay, port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Killed if still running when the client exits.
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "running {} for --via (install the OpenSSH client, or set PORTCULLIS_SSH)",
                prog.to_string_lossy()
            )
        })?;
    let (Some(inp), Some(out)) = (child.stdin.take(), child.stdout.take()) else {
        anyhow::bail!("running {}: no pipes", prog.to_string_lossy());
    };
    let (tx, rx) = oneshot::channel();
    // Closing its stdin (the session ended) makes `ssh -W` exit.
    tokio::spawn(async move {
        let _ = tx.send(child.wait().await.ok());
    });
    Ok((Piped { out, inp }, rx))
}

/// The one-line error when no SSH session came through the relay.
pub async fn failure(
    target: &str,
    relay: &str,
    port: u16,
    exited: oneshot::Receiver<Option<ExitStatus>>,
) -> String {
    let status = match tokio::time::timeout(Duration::from_secs(2), exited).await {
        Ok(Ok(Some(st))) => match st.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed".into(),
        },
        _ => "closed the connection".into(),
    };
    format!(
        "{target} via {relay}: ssh -W {FORWARD_HOST}:{port} {status} before the listener \
         answered (ssh's message is above: relay unreachable, its host key not trusted, \
         login refused, or nothing listening at {FORWARD_HOST}:{port} on the relay: is the \
         server booted and connected to the relay?); nothing was sent"
    )
}

impl AsyncRead for Piped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.out).poll_read(cx, buf)
    }
}

impl AsyncWrite for Piped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_is_never_an_option() {
        let a = args("admin@relay.example.net", 2201);
        assert_eq!(
            a,
            [
                "-W",
                "127.0.0.1:2201",
                "-o",
                "ClearAllForwardings=yes",
                "--",
                "admin@relay.example.net"
            ]
        );
        assert!(crate::cli::relay_name("-oProxyCommand=touch /tmp/x").is_err());
        assert!(crate::cli::relay_name("relay x").is_err());
        assert!(crate::cli::relay_name("").is_err());
        assert!(crate::cli::relay_name("admin@relay").is_ok());
    }
}
