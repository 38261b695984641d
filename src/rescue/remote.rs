//! The thin seam between plans and the rescue system: run one command line
//! over SSH, optionally with secret bytes on its standard input, and collect
//! its output and exit status. The real implementation reuses the client's
//! connection code (host-key pinning that fails closed, agent/key-file
//! authentication); tests use a recording fake.

use crate::client::{self, ClientError, Options};
use crate::text::StreamFilter;
use anyhow::{Context, Result};
use russh::{ChannelMsg, Disconnect};
use std::io::Write;

/// Most output we keep from one command: a hostile rescue system must not
/// make us allocate without bound. Streamed output is shown in full.
const MAX_OUTPUT: usize = 8 << 20;

#[derive(Debug, Clone, Default)]
pub struct Output {
    /// `None`: no exit status arrived (killed, or the connection dropped).
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last non-empty line of stderr (else stdout), for one-line errors.
    pub fn last_line(&self) -> String {
        let pick = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map(|l| l.chars().take(300).collect::<String>())
        };
        pick(&self.stderr)
            .or_else(|| pick(&self.stdout))
            .unwrap_or_default()
    }
}

/// Runs command lines on the rescue system.
#[allow(async_fn_in_trait)]
pub trait Remote {
    /// Runs `command` through the remote user's shell, writes `stdin` (if
    /// any) and closes it. `stream` shows output live as well. `Ok` whatever
    /// the exit status; `Err` when the command could not be run at all.
    async fn run(&mut self, command: &str, stdin: Option<&[u8]>, stream: bool) -> Result<Output>;
}

/// An SSH connection to the rescue system's OpenSSH server.
pub struct Ssh {
    conn: russh::client::Handle<client::Checker>,
}

impl Ssh {
    pub async fn connect(opts: &Options) -> Result<Self, ClientError> {
        Ok(Ssh {
            conn: client::connect(opts).await?,
        })
    }

    pub async fn close(self) {
        let _ = self
            .conn
            .disconnect(Disconnect::ByApplication, "", "")
            .await;
    }
}

impl Remote for Ssh {
    #[tracing::instrument(skip_all)]
    async fn run(&mut self, command: &str, stdin: Option<&[u8]>, stream: bool) -> Result<Output> {
        let mut ch = self
            .conn
            .channel_open_session()
            .await
            .context("opening an SSH session on the rescue system")?;
        ch.exec(true, command)
            .await
            .context("sending the command")?;
        if let Some(data) = stdin {
            ch.data(data).await.context("sending standard input")?;
        }
        ch.eof().await.context("closing standard input")?;
        let mut out = Output::default();
        // Live output goes to the admin's terminal: escape sequences from
        // the rescue system are shown, not obeyed.
        let (mut show_out, mut show_err) = (StreamFilter::default(), StreamFilter::default());
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    if stream {
                        let _ = std::io::stdout().write_all(&show_out.push(&data));
                        let _ = std::io::stdout().flush();
                    }
                    if out.stdout.len() + data.len() <= MAX_OUTPUT {
                        out.stdout.extend_from_slice(&data);
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    if stream {
                        let _ = std::io::stderr().write_all(&show_err.push(&data));
                    }
                    if out.stderr.len() + data.len() <= MAX_OUTPUT {
                        out.stderr.extend_from_slice(&data);
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.stderr.extend_from_slice(
                        format!("\nkilled by signal {signal_name:?}\n").as_bytes(),
                    );
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        if stream {
            let _ = std::io::stdout().write_all(&show_out.finish());
            let _ = std::io::stderr().write_all(&show_err.finish());
        }
        Ok(out)
    }
}

#[cfg(test)]
pub mod fake {
    //! A recording fake: answers by the first rule whose prefix matches.
    use super::*;

    #[derive(Default)]
    pub struct Fake {
        /// (prefix, answers): answers are used in turn, the last one stays.
        /// A prefix starting with `~` matches anywhere in the command.
        pub rules: Vec<(String, Vec<Output>)>,
        /// (command, stdin bytes) in order.
        pub calls: Vec<(String, Option<Vec<u8>>)>,
    }

    impl Fake {
        pub fn on(&mut self, prefix: &str, status: u32, stdout: &str) {
            self.on_output(
                prefix,
                Output {
                    status: Some(status),
                    stdout: stdout.as_bytes().to_vec(),
                    stderr: vec![],
                },
            );
        }

        pub fn on_output(&mut self, prefix: &str, out: Output) {
            match self.rules.iter_mut().find(|r| r.0 == prefix) {
                Some(r) => r.1.push(out),
                None => self.rules.push((prefix.to_string(), vec![out])),
            }
        }

        pub fn commands(&self) -> Vec<&str> {
            self.calls.iter().map(|c| c.0.as_str()).collect()
        }
    }

    impl Remote for Fake {
        async fn run(
            &mut self,
            command: &str,
            stdin: Option<&[u8]>,
            _stream: bool,
        ) -> Result<Output> {
            self.calls
                .push((command.to_string(), stdin.map(<[u8]>::to_vec)));
            // Probes carry a random boundary; answers use "@@B" and get the
            // real one substituted.
            let boundary = command
                .split_whitespace()
                .find(|w| w.starts_with("@@portcullis-"))
                .unwrap_or("@@B")
                .to_string();
            for (prefix, outs) in &mut self.rules {
                let matches = match prefix.strip_prefix('~') {
                    Some(needle) => command.contains(needle),
                    None => command.starts_with(prefix.as_str()),
                };
                if matches {
                    let mut o = if outs.len() > 1 {
                        outs.remove(0)
                    } else {
                        outs[0].clone()
                    };
                    o.stdout = String::from_utf8_lossy(&o.stdout)
                        .replace("@@B", &boundary)
                        .into_bytes();
                    return Ok(o);
                }
            }
            anyhow::bail!("fake: no rule for {command:?}")
        }
    }
}
