//! What a fleet run prints: live progress on a terminal (one line per
//! change, plus a counter line redrawn in place), a summary table at the
//! end, or one JSON record per host with `--json`. Text is built by pure
//! functions so it can be tested; only [`show`] writes.

use super::run::{Event, HostOutcome, Phase, Report};
use std::collections::BTreeMap;
use std::io::Write;
use tokio::sync::mpsc;

/// How a run is shown: records on stdout, progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// `--json`: one record per host on stdout as each finishes.
    pub json: bool,
    pub progress: Progress,
}

/// Progress on stderr, so stdout carries only results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A capable terminal: live lines and a counter redrawn in place.
    Live,
    /// A terminal without escape sequences (`TERM=dumb`, `NO_COLOR`):
    /// plain lines, no counter.
    Lines,
    /// stderr is not a terminal: nothing.
    Quiet,
}

/// Picks the progress style from the terminal and the environment.
pub fn progress_for(tty: bool, term: Option<&str>, no_color: bool) -> Progress {
    if !tty {
        Progress::Quiet
    } else if no_color || term.is_none_or(|t| t == "dumb" || t.is_empty()) {
        Progress::Lines
    } else {
        Progress::Live
    }
}

/// The mode for this process: stderr's terminal, `TERM`, `NO_COLOR`
/// (set to anything non-empty, as no-color.org says).
pub fn mode(json: bool) -> Mode {
    use std::io::IsTerminal;
    let term = std::env::var("TERM").ok();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    Mode {
        json,
        progress: progress_for(std::io::stderr().is_terminal(), term.as_deref(), no_color),
    }
}

/// Live display state.
pub struct Display {
    names: Vec<String>,
    phases: Vec<Option<Phase>>,
    width: usize,
    started: std::time::Instant,
}

impl Display {
    pub fn new(names: Vec<String>) -> Self {
        let width = names.iter().map(|n| n.len()).max().unwrap_or(4).min(32);
        Display {
            phases: vec![None; names.len()],
            names,
            width,
            started: std::time::Instant::now(),
        }
    }

    /// The line(s) to print for an event (without the counter).
    pub fn line(&mut self, ev: &Event) -> Option<String> {
        let (index, text) = match ev {
            Event::Phase { index, phase } => {
                let slot = self.phases.get_mut(*index)?;
                if *slot == Some(*phase) || matches!(phase, Phase::Done | Phase::Failed) {
                    // Done/Failed are printed with their report.
                    *slot = Some(*phase);
                    return None;
                }
                *slot = Some(*phase);
                let text = match phase {
                    // Every host starts waiting: the counter says so; a
                    // line per host would flood a large fleet's screen.
                    Phase::Waiting => return None,
                    Phase::Unlocking => "unlocking",
                    Phase::Booting => "unlocked, booting",
                    Phase::Done | Phase::Failed => return None,
                };
                (*index, text.to_string())
            }
            Event::Finished { index, report } => {
                if let Some(slot) = self.phases.get_mut(*index) {
                    *slot = Some(if report.outcome.success() {
                        Phase::Done
                    } else {
                        Phase::Failed
                    });
                }
                let mut t = match report.outcome {
                    HostOutcome::Up => format!(
                        "up ({} after unlock)",
                        secs(report.time_to_up.unwrap_or_default())
                    ),
                    HostOutcome::Unlocked => "unlocked".to_string(),
                    o if o.success() => o.name().to_string(),
                    o => format!("FAILED: {}", o.name()),
                };
                if !report.outcome.success() && !report.detail.is_empty() {
                    t = format!("{t}: {}", one_line(&report.detail, 160));
                }
                (*index, t)
            }
        };
        let name = self.names.get(index)?;
        Some(format!(
            "{:>7} {:<w$} {text}",
            secs(self.started.elapsed().as_secs_f64()),
            name,
            w = self.width
        ))
    }

    /// "3 waiting, 1 unlocking, 4 booting, 10 up, 1 failed".
    pub fn counter(&self) -> String {
        let count = |p: Phase| self.phases.iter().filter(|x| **x == Some(p)).count();
        let waiting = self
            .phases
            .iter()
            .filter(|x| x.is_none() || **x == Some(Phase::Waiting))
            .count();
        format!(
            "{waiting} waiting, {} unlocking, {} booting, {} done, {} failed",
            count(Phase::Unlocking),
            count(Phase::Booting),
            count(Phase::Done),
            count(Phase::Failed)
        )
    }
}

fn secs(s: f64) -> String {
    format!("{s:.1}s")
}

/// First line of `s`, cut to `max` characters, terminal-safe (details
/// carry the server's messages).
fn one_line(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or_default();
    if first.chars().count() > max {
        let cut: String = first.chars().take(max).collect();
        format!("{}…", crate::text::line(&cut))
    } else {
        crate::text::line(first).into_owned()
    }
}

/// One JSON line for a host.
pub fn json_line(r: &Report) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| {
        format!(
            "{{\"host\":{:?},\"outcome\":\"error\",\"detail\":\"encoding failed\"}}",
            r.host
        )
    })
}

/// The summary table, in plan order, and a totals line.
pub fn table(reports: &[Report]) -> String {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            [
                r.host.clone(),
                r.outcome.name().to_string(),
                r.unlocked_after.map(secs).unwrap_or_else(|| "-".into()),
                r.time_to_up.map(secs).unwrap_or_else(|| "-".into()),
                one_line(&r.detail, 100),
            ]
        })
        .collect();
    let head = ["HOST", "OUTCOME", "UNLOCKED", "TO UP", "DETAIL"];
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate().take(4) {
            if let Some(wi) = w.get_mut(i) {
                *wi = (*wi).max(c.chars().count());
            }
        }
    }
    let fmt = |c: &[String; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
        .trim_end()
        .to_string()
    };
    let mut out = fmt(&head.map(String::from));
    out.push('\n');
    for row in &rows {
        out.push_str(&fmt(row));
        out.push('\n');
    }
    out.push_str(&totals(reports));
    out.push('\n');
    out
}

/// "12 hosts: 10 up, 1 wrong-passphrase, 1 unreachable".
pub fn totals(reports: &[Report]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports {
        *by.entry(r.outcome.name()).or_default() += 1;
    }
    let parts: Vec<String> = by.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "{} host{}: {}",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// Consumes events until the run ends: records to stdout with `--json`,
/// progress to stderr as `mode.progress` says.
pub async fn show(mut rx: mpsc::UnboundedReceiver<Event>, names: Vec<String>, mode: Mode) {
    let mut p = Display::new(names);
    let mut err = std::io::stderr();
    while let Some(ev) = rx.recv().await {
        if mode.json {
            if let Event::Finished { report, .. } = &ev {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "{}", json_line(report));
                let _ = out.flush();
            }
        }
        let line = p.line(&ev);
        let text = match mode.progress {
            Progress::Quiet => continue,
            Progress::Lines => match line {
                Some(l) => format!("{l}\n"),
                None => continue,
            },
            // Clear the counter line, print the change above it, redraw.
            Progress::Live => {
                let mut text = String::from("\r\x1b[K");
                if let Some(l) = line {
                    text.push_str(&l);
                    text.push('\n');
                }
                text.push_str(&p.counter());
                text
            }
        };
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
    if mode.progress == Progress::Live {
        let _ = err.write_all(b"\r\x1b[K");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(host: &str, outcome: HostOutcome, detail: &str) -> Report {
        Report {
            host: host.into(),
            target: format!("{host}:22"),
            outcome,
            exit_code: outcome.exit_code(),
            unlock: None,
            unlocked_after: Some(1.25),
            time_to_up: (outcome == HostOutcome::Up).then_some(4.0),
            detail: detail.into(),
        }
    }

    #[test]
    fn table_and_totals() {
        let t = table(&[
            rep("web1", HostOutcome::Up, ""),
            rep(
                "db-long-name",
                HostOutcome::WrongPassphrase,
                "wrong passphrase (4 tries left)\nsecond line",
            ),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "HOST          OUTCOME           UNLOCKED  TO UP  DETAIL"
        );
        assert_eq!(lines[1], "web1          up                    1.2s   4.0s");
        assert_eq!(
            lines[2],
            "db-long-name  wrong-passphrase      1.2s      -  wrong passphrase (4 tries left)"
        );
        assert_eq!(lines[3], "2 hosts: 1 up, 1 wrong-passphrase");
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        let evil = "denied \x1b]0;owned\x07\x1b[2J\u{9b}1m";
        let t = table(&[rep("web1", HostOutcome::WrongPassphrase, evil)]);
        assert!(
            !t.contains('\x1b') && !t.contains('\x07') && !t.contains('\u{9b}'),
            "{t:?}"
        );
        assert!(
            t.contains("denied \\x1b]0;owned\\x07\\x1b[2J\\x9b1m"),
            "{t}"
        );
        let mut p = Display::new(vec!["web1".into()]);
        let l = p
            .line(&Event::Finished {
                index: 0,
                report: Box::new(rep("web1", HostOutcome::WrongPassphrase, evil)),
            })
            .unwrap();
        assert!(!l.contains('\x1b'), "{l:?}");
        // JSON keeps the exact text (serde escapes it).
        let j = json_line(&rep("web1", HostOutcome::WrongPassphrase, evil));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["detail"], evil);
    }

    #[test]
    fn live_lines() {
        let mut p = Display::new(vec!["a".into(), "bb".into()]);
        let l = p
            .line(&Event::Phase {
                index: 1,
                phase: Phase::Unlocking,
            })
            .unwrap();
        assert!(l.ends_with("bb unlocking"), "{l}");
        assert_eq!(
            p.counter(),
            "1 waiting, 1 unlocking, 0 booting, 0 done, 0 failed"
        );
        let l = p
            .line(&Event::Finished {
                index: 0,
                report: Box::new(rep("a", HostOutcome::Unreachable, "a:22: refused")),
            })
            .unwrap();
        assert!(l.ends_with("a  FAILED: unreachable: a:22: refused"), "{l}");
        assert!(p.counter().ends_with("1 failed"));
    }

    #[test]
    fn json_records() {
        let j = json_line(&rep("web1", HostOutcome::Up, ""));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["host"], "web1");
        assert_eq!(v["outcome"], "up");
        assert_eq!(v["exit-code"], 0);
        assert_eq!(v["time-to-up"], 4.0);
        assert!(v.get("detail").is_none());
    }

    #[test]
    fn progress_style_follows_terminal_and_environment() {
        assert_eq!(progress_for(false, Some("xterm"), false), Progress::Quiet);
        assert_eq!(progress_for(true, Some("xterm"), false), Progress::Live);
        assert_eq!(progress_for(true, Some("dumb"), false), Progress::Lines);
        assert_eq!(progress_for(true, None, false), Progress::Lines);
        assert_eq!(progress_for(true, Some("xterm"), true), Progress::Lines);
    }
}
