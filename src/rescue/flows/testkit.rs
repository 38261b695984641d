//! Test helpers shared by the flows' tests: settings, a passphrase, lsblk
//! and probe answers, a fake rescue system with the main system mounted,
//! and the JSON snapshots in `fixtures/flows/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::KexecOptions;
use crate::rescue::kexec::LoadMethod;
use crate::rescue::remote::fake::Fake;
use crate::rescue::remote::Remote;
use crate::rescue::run::{Session, Settings};
use crate::rescue::state::tests::{probe_output_with, MOUNTINFO};
use crate::secret::Passphrase;
use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};

pub const PASS: &[u8] = b"correct horse battery";
pub const LUKS_UUID: &str = "7d0a6f0e-3333-4a4a-9f9f-0123456789ab";
pub const ROOT_ONLY: &str = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";

pub fn settings() -> Settings {
    Settings {
        target: "/mnt/portcullis".into(),
        dry_run: false,
        yes: true,
        json: true,
        verbose: false,
        host: "rescue:22".into(),
    }
}

pub fn pass() -> Result<Passphrase> {
    Ok(Passphrase::new(PASS.to_vec()).unwrap())
}

/// The lsblk fixture with the LUKS device locked, or open under `name`.
pub fn lsblk(mapping: Option<&str>) -> String {
    let mut v: Value = serde_json::from_str(include_str!("../fixtures/lsblk.json")).unwrap();
    let part = &mut v["blockdevices"][1]["children"][1];
    match mapping {
        None => {
            part.as_object_mut().unwrap().remove("children");
        }
        Some(n) => {
            part["children"][0]["name"] = json!(n);
            part["children"][0]["path"] = json!(format!("/dev/mapper/{n}"));
        }
    }
    format!("{v}\n")
}

pub fn never_in_commands(fake: &Fake) {
    let secret = String::from_utf8_lossy(PASS);
    for (c, _) in &fake.calls {
        assert!(
            !c.contains(secret.as_ref()),
            "passphrase in a command line: {c}"
        );
    }
}

/// The main system's fstab (the fixture) and crypttab, as the target
/// read answers.
pub fn fstab_and_crypttab() -> String {
    format!(
        "@@B fstab\n{}\n@@B crypttab\nroot UUID={LUKS_UUID} none luks,discard\n",
        include_str!("../fixtures/fstab")
    )
}

/// extlinux with one entry, and initramfs-tools with cryptsetup installed.
pub const BOOT_PROBE: &str = "@@B file /boot/extlinux/extlinux.conf\nDEFAULT main\nLABEL main\n LINUX /vmlinuz\n INITRD /initrd.img\n \
     APPEND root=/dev/mapper/root ro rootflags=subvol=@\n@@B boot\nvmlinuz\ninitrd.img\n\
     @@B exists\n/usr/share/initramfs-tools/hooks/cryptroot\n";

/// A rescue system with the main system open as `root` and mounted at
/// the target; `extra` rules come before the catch-all (exit 0, no output).
pub fn mounted(extra: &[(&str, u32, &str)]) -> Fake {
    let mut fake = Fake::default();
    for (p, c, o) in extra {
        fake.on(p, *c, o);
    }
    fake.on(
        "~lsblk -J",
        0,
        &probe_output_with("@@B", "root\n", MOUNTINFO, &lsblk(Some("root"))),
    );
    fake.on("~/etc/crypttab", 0, &fstab_and_crypttab());
    fake.on("~loader/entries", 0, BOOT_PROBE);
    fake.on(
        "cryptsetup luksDump",
        0,
        include_str!("../fixtures/luksdump-luks2.txt"),
    );
    fake.on(
        "for f in",
        0,
        "/mnt/portcullis/boot/vmlinuz\n/mnt/portcullis/boot/initrd.img\n",
    );
    fake.on("", 0, "");
    fake
}

/// Compares the exit code, report, plans and notes with
/// `fixtures/flows/NAME.json`; `PORTCULLIS_BLESS=1` writes it instead
/// (review the diff before committing: the keys are a contract).
pub fn snapshot<R: Remote>(name: &str, code: u8, details: &impl Serialize, s: &Session<'_, R>) {
    let got = json!({"exit-code": code, "details": details, "plans": s.plans, "notes": s.notes});
    let path = format!(
        "{}/src/rescue/fixtures/flows/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("PORTCULLIS_BLESS").is_some() {
        std::fs::write(&path, format!("{got:#}\n")).unwrap();
        return;
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(got, want, "{name}: got {got:#}");
}

pub fn kexec_options() -> KexecOptions {
    KexecOptions {
        entry: None,
        kernel: None,
        initrd: None,
        cmdline: None,
        append: Some("quiet".into()),
        flavour: None,
        no_handover: false,
        load_method: LoadMethod::Auto,
        load_only: false,
    }
}
