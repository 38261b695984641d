//! The checklist as people read it: one line per check (status, id,
//! summary), its fix indented under every warn and fail, the keys found,
//! and a verdict line. Plain ASCII markers, no colour, so it reads the same
//! on a console, in a log and through `ssh`. Every string from an image
//! passes through [`crate::text::line`]: an image is not trusted to keep
//! escape sequences out of a file name.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::report::{ImageReport, Report, Status};
use crate::text::line;
use std::fmt::Write;

/// The marker of a status, four columns wide.
pub fn marker(s: Status) -> &'static str {
    match s {
        Status::Pass => "ok  ",
        Status::Skip => "skip",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    }
}

/// The checklist of one image.
pub fn render_image(img: &ImageReport) -> String {
    let mut out = String::new();
    let _ = write!(out, "{}", line(&img.image));
    if let Some(k) = &img.kernel {
        let _ = write!(out, " (kernel {})", line(k));
    }
    out.push('\n');
    if let Some(c) = &img.cmdline {
        let _ = writeln!(out, "  command line: {}", line(c));
    }
    let width = img.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &img.checks {
        let _ = writeln!(
            out,
            "  {}  {:width$}  {}",
            marker(c.status),
            line(&c.id),
            line(&c.summary)
        );
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "  {:4}  {:width$}  fix: {}", "", "", line(fix));
        }
    }
    for fp in &img.host_keys {
        let _ = writeln!(out, "  host key in the image: {}", line(fp));
    }
    for k in &img.authorized_keys {
        let _ = writeln!(
            out,
            "  authorized key: {} {} {}",
            line(&k.fingerprint),
            line(&k.algorithm),
            line(&k.comment)
        );
    }
    out
}

/// The last line: what the checks add up to.
pub fn verdict(report: &Report) -> String {
    let count = |s: Status| {
        report
            .images
            .iter()
            .flat_map(|i| &i.checks)
            .filter(|c| c.status == s)
            .count()
    };
    match report.verdict {
        Status::Pass | Status::Skip => {
            "verdict: ok: remote unlock should work after the next reboot".into()
        }
        Status::Warn => format!(
            "verdict: WARN: nothing fails, but {} check(s) warn: read them before rebooting",
            count(Status::Warn)
        ),
        Status::Fail => format!(
            "verdict: FAIL: remote unlock will fail after the next reboot: fix the {} failed check(s) first",
            count(Status::Fail)
        ),
    }
}

/// The whole report: each image's checklist, then the verdict.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for img in &report.images {
        out.push_str(&render_image(img));
        out.push('\n');
    }
    out.push_str(&verdict(report));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::report::Check;

    #[test]
    fn a_checklist_with_fixes_and_a_verdict() {
        let img = ImageReport {
            image: "/boot/initrd.img-6.1.0-18-amd64".into(),
            kernel: Some("6.1.0-18-amd64".into()),
            cmdline: Some("ro ip=dhcp".into()),
            host_keys: vec!["SHA256:abc".into()],
            authorized_keys: vec![],
            checks: vec![
                Check {
                    id: "listener".into(),
                    status: Status::Pass,
                    summary: "portcullisd 0.1.0".into(),
                    fix: None,
                },
                Check {
                    id: "nic-driver".into(),
                    status: Status::Fail,
                    summary: "driver \x1b[2Jmissing".into(),
                    fix: Some("add it".into()),
                },
            ],
        };
        let text = render(&Report::new(vec![img]));
        assert_eq!(
            text,
            "/boot/initrd.img-6.1.0-18-amd64 (kernel 6.1.0-18-amd64)\n\
             \x20 command line: ro ip=dhcp\n\
             \x20 ok    listener    portcullisd 0.1.0\n\
             \x20 FAIL  nic-driver  driver \\x1b[2Jmissing\n\
             \x20                   fix: add it\n\
             \x20 host key in the image: SHA256:abc\n\
             \n\
             verdict: FAIL: remote unlock will fail after the next reboot: fix the 1 failed check(s) first\n"
        );
    }

    #[test]
    fn verdicts() {
        let r = Report::new(vec![]);
        assert!(verdict(&r).starts_with("verdict: ok"));
    }
}
