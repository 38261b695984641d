//! `portcullis rescue …` as a library entry point: a plain [`Request`]
//! (the binary builds it from the command line; this module never sees
//! clap) goes to [`super::flows`]. The host is named as for every client
//! command (the one resolver, without the inventory: rescue systems are
//! not initramfs listeners); the rescue system's host key is pinned in its
//! own known-hosts file, apart from the initramfs keys of the same
//! addresses.

use super::flows::{self, KexecOptions};
use super::remote::Ssh;
use super::run::{Session, Settings};
use crate::client::report::ErrorReport;
use crate::client::settings::Connection;
use crate::client::{passphrase, ClientError, Options};
use crate::fleet::resolve::{self, Lookup};
use crate::protocol::exit;
use anyhow::{anyhow, Result};

/// One `portcullis rescue` command, as plain settings.
#[derive(Debug, Clone)]
pub struct Request {
    /// The rescue system as typed (any target form but inventory names).
    pub host: String,
    pub conn: Connection,
    /// Where the main system is mounted on the rescue system.
    pub mount_dir: String,
    pub dry_run: bool,
    pub yes: bool,
    pub verbose: bool,
    /// For `unlock` and `kexec`.
    pub source: passphrase::Source,
    pub action: Action,
}

/// What to do on the rescue system.
#[derive(Debug, Clone)]
pub enum Action {
    Inspect,
    Unlock {
        devices: Vec<String>,
    },
    Mount {
        rw: bool,
        root_device: Option<String>,
        subvol: Option<String>,
    },
    Check {
        repair: bool,
        root_device: Option<String>,
        subvol: Option<String>,
    },
    Chroot {
        command: Vec<String>,
    },
    Kexec(KexecOptions),
    Close {
        keep_open: bool,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Inspect => "inspect",
            Action::Unlock { .. } => "unlock",
            Action::Mount { .. } => "mount",
            Action::Check { .. } => "check",
            Action::Chroot { .. } => "chroot",
            Action::Kexec(_) => "kexec",
            Action::Close { .. } => "close",
        }
    }

    fn takes_passphrase(&self) -> bool {
        matches!(self, Action::Unlock { .. } | Action::Kexec(_))
    }
}

impl Request {
    fn options(&self) -> Result<Options> {
        let lookup = Lookup {
            inventory: None,
            ssh_config: None,
            default_inventory: false,
        };
        let hosts = resolve::resolve(std::slice::from_ref(&self.host), &lookup)?.hosts;
        let [h] = hosts.as_slice() else {
            anyhow::bail!("rescue works on one host at a time");
        };
        Ok(self.conn.options(
            h.listener.clone(),
            &h.user,
            &h.identity,
            &[],
            "rescue_known_hosts",
            true,
        )?)
    }

    fn settings(&self, host: String) -> Result<Settings> {
        let trimmed = self.mount_dir.trim_end_matches('/');
        if trimmed.is_empty() {
            anyhow::bail!("--target must not be the rescue system's root");
        }
        let target = super::shell::path("--target", trimmed)?;
        Ok(Settings {
            target,
            dry_run: self.dry_run,
            yes: self.yes,
            json: self.conn.json,
            verbose: self.verbose,
            host,
        })
    }
}

fn report(host: &str, cmd: &str, json: bool, e: &ClientError) -> u8 {
    ErrorReport {
        target: host,
        command: Some(cmd),
        outcome: e.kind(),
        message: e.to_string(),
        exit_code: e.exit_code(),
        text_names_target: true,
        extra: vec![],
    }
    .print(json)
}

/// Runs `portcullis rescue …`; returns the exit code.
pub async fn run(req: Request) -> u8 {
    let cmd = req.action.name();
    let json = req.conn.json;
    let (opts, settings) = match req.options().and_then(|o| {
        let s = req.settings(o.target.to_string())?;
        Ok((o, s))
    }) {
        Ok(x) => x,
        Err(e) => return report(&req.host, cmd, json, &ClientError::Other(e)),
    };
    let host = settings.host.clone();
    let mut ssh = match Ssh::connect(&opts).await {
        Ok(s) => s,
        Err(e) => return report(&host, cmd, json, &e),
    };
    let pass_source = req.action.takes_passphrase().then(|| req.source.clone());
    let what = host.clone();
    let read_pass = move || match &pass_source {
        Some(src) => passphrase::read(src, &format!("{what} (rescue)")),
        None => Err(anyhow!("internal: this command takes no passphrase")),
    };
    let mut session = Session::new(&mut ssh, settings);
    let result = match &req.action {
        Action::Inspect => flows::inspect(&mut session).await,
        Action::Unlock { devices } => flows::unlock(&mut session, devices, &read_pass).await,
        Action::Mount {
            rw,
            root_device,
            subvol,
        } => flows::mount(&mut session, *rw, root_device.as_deref(), subvol.as_deref()).await,
        Action::Check {
            repair,
            root_device,
            subvol,
        } => {
            flows::check(
                &mut session,
                *repair,
                root_device.as_deref(),
                subvol.as_deref(),
            )
            .await
        }
        Action::Chroot { command } => flows::chroot(&mut session, command).await,
        Action::Close { keep_open } => flows::close(&mut session, *keep_open).await,
        Action::Kexec(o) => flows::kexec_flow(&mut session, o, &read_pass).await,
    };
    let (code, details) = match result {
        Ok(r) => r,
        Err(e) => {
            let code = ErrorReport {
                target: &host,
                command: Some(cmd),
                outcome: "error",
                message: format!("{e:#}"),
                exit_code: exit::ERROR,
                text_names_target: true,
                extra: vec![
                    ("plans", serde_json::json!(session.plans)),
                    ("executed", serde_json::json!(session.executed)),
                    ("notes", serde_json::json!(session.notes)),
                ],
            }
            .print(json);
            drop(session);
            ssh.close().await;
            return code;
        }
    };
    if json {
        let v = serde_json::json!({
            "target": host, "command": cmd, "outcome": if code == 0 { "ok" } else { "problem" },
            "details": details, "plans": session.plans, "executed": session.executed,
            "notes": session.notes, "exit-code": code,
        });
        println!("{v}");
    }
    drop(session);
    ssh.close().await;
    code
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(mount_dir: &str) -> Request {
        Request {
            host: "h".into(),
            conn: Connection {
                fingerprint: None,
                known_hosts: None,
                accept_new: false,
                identity: vec![],
                agent: false,
                user: None,
                wait: None,
                timeout: std::time::Duration::from_secs(1),
                json: false,
                via: None,
            },
            mount_dir: mount_dir.into(),
            dry_run: false,
            yes: false,
            verbose: false,
            source: passphrase::Source::Prompt,
            action: Action::Inspect,
        }
    }

    #[test]
    fn mount_dir_is_checked() {
        assert!(req("/").settings("h".into()).is_err());
        assert_eq!(
            req("/mnt/portcullis/").settings("h".into()).unwrap().target,
            "/mnt/portcullis"
        );
    }
}
