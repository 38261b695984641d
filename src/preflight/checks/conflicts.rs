//! `conflicting-hooks`: another unlock path in the image that fights ours.
//! mkinitcpio's `encrypt` (or `encryptssh`) hook beside `portcullis` loops
//! on its own prompt and never sees the volume opened over SSH; a second
//! SSH server (dropbear, dracut-sshd's sshd, tinysshd) on the listener's
//! port keeps one of the two from binding.

use super::{fail, pass, warn, Ctx};
use crate::preflight::report::{Check, Status};

const ID: &str = "conflicting-hooks";

/// Other SSH servers the unlock tools put in an image, with how to remove
/// each.
const SERVERS: &[(&str, &str)] = &[
    (
        "dropbear",
        "remove dropbear-initramfs (or the dropbear hook)",
    ),
    (
        "sshd",
        "remove dracut-sshd (or omit_dracutmodules+=\" 46sshd \")",
    ),
    ("tinysshd", "remove tinyssh from the initramfs hooks"),
];

pub fn conflicting_hooks(ctx: &Ctx<'_>) -> Check {
    let mut found: Vec<Check> = Vec::new();
    // mkinitcpio writes the runtime hooks it runs to /config.
    let hooks: Vec<String> = ctx
        .image
        .file("config")
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("HOOKS="))
        .flat_map(|v| {
            v.trim_matches('"')
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for hook in ["encrypt", "encryptssh"] {
        if hooks.iter().any(|h| h == hook) && ctx.image.file(&format!("hooks/{hook}")).is_some() {
            found.push(fail(
                ID,
                format!("mkinitcpio's {hook} hook runs beside portcullis: it keeps prompting on the console and the boot never continues after an SSH unlock"),
                format!("remove {hook} from HOOKS in /etc/mkinitcpio.conf (portcullis replaces it and reads the same cryptdevice=), then run mkinitcpio -P"),
            ));
        }
    }
    let ports: Vec<u16> = ctx
        .settings
        .as_ref()
        .map(|s| s.listen.iter().map(|a| a.port()).collect())
        .unwrap_or_else(|_| vec![22]);
    for (name, remove) in SERVERS {
        let present = ["usr/sbin", "usr/bin", "sbin", "bin"]
            .iter()
            .any(|d| ctx.image.file(&format!("{d}/{name}")).is_some());
        if !present {
            continue;
        }
        let summary = format!("another SSH server in the image: {name}");
        let fix = format!("{remove}, then run {}", ctx.rebuild());
        // They all default to port 22; on another port they only waste
        // space and confuse whoever connects.
        found.push(if ports.contains(&22) {
            fail(
                ID,
                format!("{summary}; both default to port 22, so one of them will not start"),
                fix,
            )
        } else {
            warn(ID, summary, fix)
        });
    }
    found.sort_by_key(|c| std::cmp::Reverse(c.status));
    let more = found.len().saturating_sub(1);
    match found.into_iter().next() {
        Some(mut c) => {
            if more > 0 && c.status != Status::Pass {
                c.summary
                    .push_str(&format!(" (and {more} more conflict(s))"));
            }
            c
        }
        None => pass(ID, "no other unlock hook or SSH server in the image"),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::super::fixture::{check, exe, file};
    use crate::preflight::image::Image;
    use crate::preflight::report::Status;
    use crate::preflight::system::fake::FakeSystem;

    #[test]
    fn passes_with_portcullis_alone() {
        let mut img = Image::default();
        file(&mut img, "config", b"HOOKS=\"base udev portcullis\"\n");
        file(&mut img, "hooks/portcullis", b"");
        let c = check("conflicting-hooks", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }

    #[test]
    fn fails_on_the_encrypt_hook_beside_portcullis() {
        let mut img = Image::default();
        file(
            &mut img,
            "config",
            b"EARLYHOOKS=\"\"\nHOOKS=\"udev portcullis encrypt\"\n",
        );
        file(&mut img, "hooks/portcullis", b"");
        file(&mut img, "hooks/encrypt", b"");
        let c = check("conflicting-hooks", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.unwrap().starts_with("remove encrypt from HOOKS"));
    }

    #[test]
    fn another_ssh_server_fails_on_port_22_and_warns_elsewhere() {
        let mut img = Image::default();
        exe(&mut img, "usr/sbin/dropbear", b"");
        let c = check("conflicting-hooks", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("dropbear"));
        file(
            &mut img,
            "etc/portcullis/portcullisd.toml",
            b"listen = [\"0.0.0.0:2222\"]\n",
        );
        let c = check("conflicting-hooks", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
    }
}
