//! What `portcullis preflight` prints for people about several hosts: one
//! line each and a summary (one host gets the server's own checklist,
//! [`crate::preflight::text::render`]). Every string that came from a
//! server passes through [`text::line`].

use super::Record;
use crate::preflight::report::{Report, Status};
use crate::text;

/// Counts of failed and warning checks, e.g. `2 failed, 1 warning`.
fn counts(report: &Report) -> String {
    let n = |s: Status| {
        report
            .images
            .iter()
            .flat_map(|i| &i.checks)
            .filter(|c| c.status == s)
            .count()
    };
    let (f, w) = (n(Status::Fail), n(Status::Warn));
    let plural = |k: usize, word: &str| format!("{k} {word}{}", if k == 1 { "" } else { "s" });
    match (f, w) {
        (0, 0) => "every check passed".into(),
        (f, 0) => format!("{f} failed"),
        (0, w) => plural(w, "warning"),
        (f, w) => format!("{f} failed, {}", plural(w, "warning")),
    }
}

/// The ids of the checks that did not pass, for the one-line fleet view.
fn not_passed(report: &Report) -> String {
    let mut ids: Vec<String> = Vec::new();
    for c in report.images.iter().flat_map(|i| &i.checks) {
        if matches!(c.status, Status::Fail | Status::Warn) && !ids.contains(&c.id) {
            ids.push(c.id.clone());
        }
    }
    ids.join(", ")
}

/// The fleet table: one line per host, then a summary.
pub fn table(records: &[Record]) -> String {
    let w = records
        .iter()
        .map(|r| r.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:<w$}  {:<16}  DETAIL\n", "HOST", "OUTCOME");
    for r in records {
        let detail = match &r.report {
            Some(rep) => match rep.verdict {
                Status::Pass | Status::Skip => counts(rep),
                _ => format!("{}: {}", counts(rep), not_passed(rep)),
            },
            None => r.detail.clone(),
        };
        out.push_str(&format!(
            "{:<w$}  {:<16}  {}\n",
            text::line(&r.host),
            r.outcome,
            text::line(&detail)
        ));
    }
    let mut tally: Vec<(&str, usize)> = Vec::new();
    for r in records {
        match tally.iter_mut().find(|(k, _)| *k == r.outcome) {
            Some((_, n)) => *n += 1,
            None => tally.push((r.outcome, 1)),
        }
    }
    let parts: Vec<String> = tally.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.push_str(&format!("{} hosts: {}\n", records.len(), parts.join(", ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::preflight::tests::rec;

    #[test]
    fn the_fleet_table_names_what_did_not_pass() {
        let pass = rec("a", "pass", Some(Status::Pass));
        let fail = rec("c", "fail", Some(Status::Fail));
        let down = rec("d", "unreachable", None);
        let t = table(&[pass, fail, down]);
        assert!(
            t.contains("c     fail              1 failed: nic-driver"),
            "{t}"
        );
        assert!(
            t.ends_with("3 hosts: 1 pass, 1 fail, 1 unreachable\n"),
            "{t}"
        );
    }
}
