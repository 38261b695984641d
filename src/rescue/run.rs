//! The driver: gathers state through the [`Remote`] seam, prints every plan
//! before acting, asks before destructive or boot-changing steps (unless
//! `--yes`), stops at `--dry-run`, executes, and keeps a record for `--json`.
//! Secrets only ever travel as a step's standard input.

use super::discover::{self, MainSystem, Peek};
use super::lsblk::Dev;
use super::luks;
use super::plan::{render, Effect, Input, Step};
use super::remote::{Output, Remote};
use super::shell::{quote, under};
use super::state::{self, Facts};
use crate::secret::Passphrase;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;

/// Exit code of `check` when a filesystem needs repair.
pub const NEEDS_REPAIR: u8 = crate::protocol::exit::NEEDS_REPAIR;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the main system is mounted on the rescue side.
    pub target: String,
    pub dry_run: bool,
    pub yes: bool,
    pub json: bool,
    /// Also print the read-only probe commands.
    pub verbose: bool,
    /// For messages: the rescue system's address.
    pub host: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Executed {
    pub command: String,
    pub status: Option<u32>,
    pub ok: bool,
}

/// A plan as shown, kept for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub plan: String,
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// Secret inputs for steps, by kind.
#[derive(Default)]
pub struct Secrets<'a> {
    pub passphrase: Option<&'a Passphrase>,
    pub archive: Option<&'a [u8]>,
}

pub struct Session<'a, R: Remote> {
    pub remote: &'a mut R,
    pub s: Settings,
    pub executed: Vec<Executed>,
    pub plans: Vec<Plan>,
    pub notes: Vec<String>,
}

impl<'a, R: Remote> Session<'a, R> {
    pub fn new(remote: &'a mut R, s: Settings) -> Self {
        Session {
            remote,
            s,
            executed: vec![],
            plans: vec![],
            notes: vec![],
        }
    }

    /// Human text: stdout, or stderr when stdout carries JSON. Much of it
    /// quotes the rescue system (labels, fstab, command output), so control
    /// characters are shown escaped.
    pub fn say(&self, text: &str) {
        let text = crate::text::block(text);
        if self.s.json {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let t = text.into();
        self.say(&format!("note: {t}\n"));
        self.notes.push(t);
    }

    /// Runs a read-only command (a probe) and returns its output.
    pub async fn read(&mut self, what: &str, command: &str) -> Result<Output> {
        if self.s.verbose {
            let line = format!("reading {what} (read-only): {command}");
            eprintln!("{}", crate::text::line(&line));
        }
        let out = self.remote.run(command, None, false).await?;
        self.executed.push(Executed {
            command: command.to_string(),
            status: out.status,
            ok: out.status == Some(0),
        });
        Ok(out)
    }

    pub async fn facts(&mut self) -> Result<Facts> {
        let b = state::boundary()?;
        let out = self
            .read("the rescue system's state", &state::probe_command(&b))
            .await?;
        let f = state::parse_facts(&out.stdout_text(), &b);
        if f.uid.is_none() {
            bail!(
                "the rescue system did not answer the state probe (exit {:?}: {}); is this a POSIX shell login?",
                out.status,
                out.last_line()
            );
        }
        if f.uid != Some(0) {
            bail!(
                "logged in as uid {:?} on the rescue system; rescue work needs root (use -l root)",
                f.uid
            );
        }
        if let Some(e) = &f.lsblk_error {
            if !f.has("lsblk") {
                f.require(&["lsblk"])?;
            }
            bail!("lsblk failed on the rescue system: {e}");
        }
        Ok(f)
    }

    pub async fn luks_dump(&mut self, dev: &Dev) -> Result<Option<luks::Header>> {
        let path = super::shell::path("device", &dev.path)?;
        let cmd = format!("cryptsetup luksDump {}", quote(&path));
        let out = self
            .read(&format!("the LUKS header of {}", dev.path), &cmd)
            .await?;
        Ok(luks::parse(&out.stdout_text()))
    }

    /// Peeks into every unmounted filesystem worth looking at.
    pub async fn peeks(&mut self, facts: &Facts) -> Result<Vec<Peek>> {
        let mut v = Vec::new();
        if !facts.has("mount") {
            return Ok(v);
        }
        let candidates: Vec<Dev> = facts
            .devices
            .iter()
            .filter(|d| d.fstype.as_deref().is_some_and(discover::peekable))
            .filter(|d| facts.device_mounted(&d.path).is_empty())
            .cloned()
            .collect();
        for d in candidates {
            let b = state::boundary()?;
            let out = self
                .read(
                    &format!("what {} holds", d.path),
                    &discover::peek_command(&b, &d),
                )
                .await?;
            v.push(discover::parse_peek(
                &d,
                &out.stdout_text(),
                &b,
                out.status,
                &out.stderr_text(),
            ));
        }
        Ok(v)
    }

    /// The main system: read from the target when mounted there, else found
    /// by peeking.
    pub async fn main_system(
        &mut self,
        facts: &Facts,
        device: Option<&str>,
        subvol: Option<&str>,
    ) -> Result<MainSystem> {
        let target = self.s.target.clone();
        if let Some(m) = facts.mount_at(&target).cloned() {
            let b = state::boundary()?;
            let q = |p: &str| quote(&under(&target, p));
            let cmd = format!(
                "echo {b} fstab; cat {}; echo {b} crypttab; cat {} 2>/dev/null; true",
                q("/etc/fstab"),
                q("/etc/crypttab"),
                b = quote(&b)
            );
            let out = self
                .read("the main system's fstab and crypttab", &cmd)
                .await?;
            let text = out.stdout_text();
            let secs = state::sections(&text, &b);
            let get = |n: &str| {
                secs.iter()
                    .find(|s| s.0 == n)
                    .map(|s| s.1.clone())
                    .unwrap_or_default()
            };
            let subvol = (m.fstype == "btrfs" && m.root != "/")
                .then(|| m.root.trim_start_matches('/').to_string());
            return Ok(MainSystem {
                device: m.source.clone(),
                fstype: m.fstype.clone(),
                subvol,
                fstab: super::fstab::parse(&get("fstab")),
                crypttab: crate::unlock::crypttab::parse(&get("crypttab")),
            });
        }
        let peeks = self.peeks(facts).await?;
        for p in &peeks {
            if let Some(e) = &p.error {
                self.note(format!("{}: {e}", p.device));
            }
        }
        discover::choose(&peeks, device, subvol).map_err(|e| anyhow!(e))
    }

    /// Prints a plan and records it for JSON.
    pub fn show(&mut self, title: &str, steps: &[Step], notes: &[String]) {
        self.say(&format!("{}: {}", self.s.host, render(title, steps, notes)));
        self.plans.push(Plan {
            plan: title.to_string(),
            steps: steps.to_vec(),
            notes: notes.to_vec(),
        });
    }

    /// Asks before steps that write to a filesystem or boot another kernel.
    pub fn confirm(&self, steps: &[Step]) -> Result<()> {
        let worst = steps.iter().map(|s| s.effect).max().unwrap_or(Effect::Read);
        if worst < Effect::Destructive || self.s.yes || self.s.dry_run {
            return Ok(());
        }
        // On the terminal, after flushing typeahead: keys typed before the
        // plan was shown must not answer for it.
        let question = format!("Run this plan on {}? [yes/no] ", self.s.host);
        let answer = crate::client::tty::ask_yes_no(&question)
            .map_err(|e| anyhow!("asking for confirmation: {e}"))?;
        let Some(yes) = answer else {
            bail!(
                "this plan {} and there is no terminal to ask on: read the plan (--dry-run prints it), then pass --yes",
                if worst == Effect::Boot { "boots another kernel" } else { "changes the main system" }
            );
        };
        if !yes {
            bail!("not confirmed; nothing was run");
        }
        Ok(())
    }

    /// Runs the steps in order. A failing step stops the run unless it is
    /// marked keep_going; results come back in step order.
    #[tracing::instrument(skip_all)]
    pub async fn execute(&mut self, steps: &[Step], secrets: &Secrets<'_>) -> Result<Vec<Output>> {
        let mut outs = Vec::new();
        let n = steps.len();
        for (i, st) in steps.iter().enumerate() {
            let stdin: Option<&[u8]> = match st.stdin {
                Input::None => None,
                Input::Passphrase => Some(
                    secrets
                        .passphrase
                        .ok_or_else(|| anyhow!("internal: step {} needs the passphrase", i + 1))?
                        .expose(),
                ),
                Input::KeyArchive => Some(
                    secrets
                        .archive
                        .ok_or_else(|| anyhow!("internal: step {} needs the key archive", i + 1))?,
                ),
            };
            self.say(&format!("[{}/{n}] {}\n", i + 1, st.what));
            let r = self
                .remote
                .run(&st.command, stdin, st.stream && !self.s.json)
                .await;
            let out = match r {
                Ok(o) => o,
                Err(_) if st.may_disconnect => Output::default(),
                Err(e) => return Err(e.context(format!("running `{}`", st.command))),
            };
            let ok = match out.status {
                Some(c) => st.ok_codes.contains(&c),
                None => st.may_disconnect,
            };
            self.executed.push(Executed {
                command: st.command.clone(),
                status: out.status,
                ok,
            });
            if !ok && !st.keep_going {
                bail!(
                    "step {}/{n} failed: `{}` exited {}: {}{}",
                    i + 1,
                    st.command,
                    out.status
                        .map_or("without status".into(), |c| c.to_string()),
                    out.last_line(),
                    hint(&st.command, out.status)
                );
            }
            outs.push(out);
        }
        Ok(outs)
    }

    /// Shows, confirms and (unless --dry-run) executes. `None` on dry run.
    pub async fn run_plan(
        &mut self,
        title: &str,
        steps: &[Step],
        notes: &[String],
        secrets: &Secrets<'_>,
    ) -> Result<Option<Vec<Output>>> {
        self.show(title, steps, notes);
        if steps.is_empty() {
            return Ok(Some(vec![]));
        }
        if self.s.dry_run {
            self.say("dry run: nothing was changed (read-only queries only)\n");
            return Ok(None);
        }
        self.confirm(steps)?;
        self.execute(steps, secrets).await.map(Some)
    }
}

/// What to do when a well-known command fails.
pub fn hint(command: &str, status: Option<u32>) -> String {
    let h = if command.starts_with("cryptsetup open") && status == Some(2) {
        "; wrong passphrase (or a keyslot needing more memory than this system has: see `inspect`)"
    } else if command.contains("cryptsetup close") {
        "; the volume is still in use: something is mounted from it (run close again after unmounting)"
    } else if command.contains("mount -t") || command.starts_with("mkdir -p") {
        "; a missing mount point on a read-only root needs --rw; see `dmesg | tail` on the rescue system"
    } else if command.starts_with("kexec -s") {
        "; kexec_file_load refused the kernel: under lockdown/Secure Boot it must be signed by a key the rescue kernel trusts"
    } else if command.starts_with("kexec -c") {
        "; kexec_load refused: under lockdown only --load-method file (kexec -s) works"
    } else if command.starts_with("umount") {
        "; something still uses it (a shell cd'ed there, a process in the chroot): `fuser -vm PATH` on the rescue system"
    } else {
        ""
    };
    h.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rescue::remote::fake::Fake;

    fn settings() -> Settings {
        Settings {
            target: "/mnt/portcullis".into(),
            dry_run: false,
            yes: true,
            json: true,
            verbose: false,
            host: "rescue:22".into(),
        }
    }

    #[tokio::test]
    async fn execute_sends_secrets_only_on_stdin() {
        let mut fake = Fake::default();
        fake.on("cryptsetup open", 0, "");
        let pass = Passphrase::new(b"s3cret pass".to_vec()).unwrap();
        let mut s = Session::new(&mut fake, settings());
        let step = Step::new(
            "open",
            "cryptsetup open --key-file=- /dev/vdb2 root",
            Effect::Change,
        )
        .with_stdin(Input::Passphrase);
        s.execute(
            &[step],
            &Secrets {
                passphrase: Some(&pass),
                archive: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(fake.calls.len(), 1);
        assert!(!fake.calls[0].0.contains("s3cret"));
        assert_eq!(fake.calls[0].1.as_deref(), Some(&b"s3cret pass"[..]));
    }

    #[tokio::test]
    async fn failures_stop_and_explain() {
        let mut fake = Fake::default();
        fake.on_output(
            "cryptsetup open",
            Output {
                status: Some(2),
                stdout: vec![],
                stderr: b"No key available with this passphrase.\n".to_vec(),
            },
        );
        fake.on("true", 0, "");
        let pass = Passphrase::new(b"x".to_vec()).unwrap();
        let mut s = Session::new(&mut fake, settings());
        let open = Step::new(
            "open",
            "cryptsetup open --key-file=- /dev/vdb2 root",
            Effect::Change,
        )
        .with_stdin(Input::Passphrase);
        let e = s
            .execute(
                &[open.clone(), Step::new("t", "true", Effect::Read)],
                &Secrets {
                    passphrase: Some(&pass),
                    archive: None,
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exited 2: No key available with this passphrase.; wrong passphrase"),
            "{e}"
        );
        assert!(!e.contains('x') || !e.contains("\"x\""));
        assert_eq!(fake.calls.len(), 1);
        // Missing secret: refused before anything runs.
        let mut fake = Fake::default();
        let mut s = Session::new(&mut fake, settings());
        assert!(s.execute(&[open], &Secrets::default()).await.is_err());
        assert!(fake.calls.is_empty());
    }

    #[test]
    fn confirmation_needs_yes_without_a_terminal() {
        let mut fake = Fake::default();
        let mut st = settings();
        st.yes = false;
        let s = Session::new(&mut fake, st);
        assert!(s
            .confirm(&[Step::new("m", "mount", Effect::Change)])
            .is_ok());
        if std::fs::File::open("/dev/tty").is_err() {
            let e = s
                .confirm(&[Step::new("k", "kexec -e", Effect::Boot)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("boots another kernel") && e.contains("--yes"),
                "{e}"
            );
        }
    }
}
