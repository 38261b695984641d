//! The preflight checklist: what both `portcullis-preflight` (on the
//! server) and `portcullis preflight` (on the admin's workstation) print.
//! The JSON form is the contract between them: the workstation runs the
//! server's check over SSH with `--json` and reads it back, so fields are
//! only ever added.

use serde::{Deserialize, Serialize};

/// The JSON format's version; bumped only for an incompatible change.
pub const FORMAT: u32 = 1;

/// How one check came out. Ordered: the worst status wins a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    /// Not applicable here (for example no static `ip=` to compare).
    Skip,
    Warn,
    /// Remote unlock will fail after reboot.
    Fail,
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Check {
    /// Stable identifier (`listener`, `config`, `authorized-keys`,
    /// `host-key`, `volumes`, `dm-crypt`, `backend`, `conflicting-hooks`,
    /// `network-config`, `nic-driver`, `static-ip`, `argon2-memory`, and
    /// `image` (an image that cannot be read, or none in the default
    /// entry), from the workstation `pin`, `client-key`), documented in
    /// docs/preflight.md.
    pub id: String,
    pub status: Status,
    /// What was found, one line.
    pub summary: String,
    /// What to do, one line; present on every warn and fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// One key of the image's `authorized_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthorizedKey {
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// `ssh-ed25519`, `ssh-rsa`, …
    pub algorithm: String,
    #[serde(default)]
    pub comment: String,
}

/// The checklist for one boot image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageReport {
    /// The image file read, or the staging directory.
    pub image: String,
    /// The kernel release it belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The kernel command line of its boot entry, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Fingerprints (`SHA256:…`) of the host keys inside the image.
    #[serde(default)]
    pub host_keys: Vec<String>,
    #[serde(default)]
    pub authorized_keys: Vec<AuthorizedKey>,
    pub checks: Vec<Check>,
}

/// Everything one run checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub format: u32,
    /// The worst status over every check of every image.
    pub verdict: Status,
    pub images: Vec<ImageReport>,
}

impl Report {
    pub fn new(images: Vec<ImageReport>) -> Report {
        let verdict = images
            .iter()
            .flat_map(|i| i.checks.iter().map(|c| c.status))
            .max()
            .unwrap_or(Status::Pass);
        // Skips alone are a pass.
        let verdict = if verdict == Status::Skip {
            Status::Pass
        } else {
            verdict
        };
        // Reports go to the workstation and into build logs: a command
        // line's credentials (dracut's rd.iscsi.password=, user:pass@ in
        // netroot=) are masked before anything prints or serializes them.
        let images = images
            .into_iter()
            .map(|mut i| {
                i.cmdline = i.cmdline.as_deref().map(mask_credentials);
                i
            })
            .collect();
        Report {
            format: FORMAT,
            verdict,
            images,
        }
    }

    /// The exit code for this verdict (`protocol::exit`).
    pub fn exit_code(&self) -> u8 {
        use crate::protocol::exit;
        match self.verdict {
            Status::Pass | Status::Skip => exit::UNLOCKED,
            Status::Warn => exit::PREFLIGHT_WARN,
            Status::Fail => exit::PREFLIGHT_FAIL,
        }
    }
}

/// `cmdline` with the values of `*pass*=` keys and the `user:pass` of
/// `…:user:pass@host` (iSCSI, URLs) replaced by `***`.
pub fn mask_credentials(cmdline: &str) -> String {
    cmdline
        .split(' ')
        .map(|word| {
            if let Some((key, _)) = word.split_once('=') {
                let k = key.to_ascii_lowercase();
                if k.contains("pass") || k.contains("secret") {
                    return format!("{key}=***");
                }
            }
            // `netroot=iscsi:user:pass@…`, `root=nfs://user:pass@…`.
            if let Some((before, after)) = word.split_once('@') {
                let value_at = before.find('=').map_or(0, |i| i + 1);
                if let Some(colon) = before.get(value_at..).and_then(|v| v.find(':')) {
                    let keep = before.get(..value_at + colon + 1).unwrap_or_default();
                    if before
                        .get(value_at + colon + 1..)
                        .is_some_and(|c| c.contains(':'))
                    {
                        return format!("{keep}***@{after}");
                    }
                }
            }
            word.to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn command_line_credentials_are_masked_in_the_report() {
        let line = "ro rd.iscsi.password=hunter2 rd.iscsi.in.password=s3 \
                    netroot=iscsi:alice:hunter2@192.0.2.1::3260::iqn.x root=nfs://bob:pw@h:/r \
                    console=ttyS0 ip=10.0.0.2::10.0.0.1:24::ens3:off user@host";
        let r = Report::new(vec![ImageReport {
            image: "i".into(),
            kernel: None,
            cmdline: Some(line.into()),
            host_keys: Vec::new(),
            authorized_keys: Vec::new(),
            checks: Vec::new(),
        }]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            !json.contains("hunter2") && !json.contains("s3 ") && !json.contains(":pw@"),
            "{json}"
        );
        assert_eq!(
            r.images[0].cmdline.as_deref().unwrap(),
            "ro rd.iscsi.password=*** rd.iscsi.in.password=*** \
             netroot=iscsi:***@192.0.2.1::3260::iqn.x root=nfs:***@h:/r \
             console=ttyS0 ip=10.0.0.2::10.0.0.1:24::ens3:off user@host"
        );
    }

    fn check(id: &str, status: Status) -> Check {
        Check {
            id: id.into(),
            status,
            summary: "s".into(),
            fix: None,
        }
    }

    fn image(checks: Vec<Check>) -> ImageReport {
        ImageReport {
            image: "/boot/initrd.img".into(),
            kernel: None,
            cmdline: None,
            host_keys: vec![],
            authorized_keys: vec![],
            checks,
        }
    }

    #[test]
    fn the_worst_check_decides() {
        let r = Report::new(vec![
            image(vec![check("a", Status::Pass), check("b", Status::Warn)]),
            image(vec![check("c", Status::Fail), check("d", Status::Skip)]),
        ]);
        assert_eq!(r.verdict, Status::Fail);
        assert_eq!(r.exit_code(), 14);
        let r = Report::new(vec![image(vec![check("a", Status::Skip)])]);
        assert_eq!((r.verdict, r.exit_code()), (Status::Pass, 0));
        let r = Report::new(vec![image(vec![check("a", Status::Warn)])]);
        assert_eq!(r.exit_code(), 15);
    }

    #[test]
    fn json_round_trips_in_kebab_case() {
        let r = Report::new(vec![image(vec![check("nic-driver", Status::Fail)])]);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"host-keys\""), "{text}");
        assert!(text.contains("\"status\":\"fail\""), "{text}");
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
