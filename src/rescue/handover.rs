//! Handing the passphrase to the main system's initramfs after kexec, so it
//! does not ask again, without writing the key to any disk: an extra cpio
//! archive, built in memory here and appended (in RAM on the rescue side) to
//! the main initrd. Which files go in depends on how the initramfs reads key
//! files:
//!
//! - Debian/Ubuntu initramfs-tools: `/cryptroot/crypttab` is replaced by one
//!   naming `/cryptroot/keyfiles/NAME.key` (its documented key-file layout).
//! - systemd in the initrd (dracut, mkinitcpio `sd-encrypt`):
//!   `/etc/cryptsetup-keys.d/NAME.key`, which systemd-cryptsetup loads for
//!   crypttab entries without a key file (also as `luks-UUID.key` for volumes
//!   named by `rd.luks.uuid=`).
//! - mkinitcpio `encrypt`: `/crypto_keyfile.bin`, which the hook always tries.
//!
//! Every switch_root implementation empties the initramfs, so the key files
//! are gone once the main system runs. Anything else: no handover, and the
//! caller says plainly that the main system will ask.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::cpio::Archive;
use crate::secret::Passphrase;
use anyhow::{bail, Result};
use serde::Serialize;
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavour {
    /// Debian/Ubuntu initramfs-tools with cryptsetup-initramfs.
    InitramfsTools,
    /// systemd in the initrd (dracut, mkinitcpio sd-encrypt).
    Systemd,
    /// mkinitcpio with the busybox `encrypt` hook.
    MkinitcpioEncrypt,
    /// No handover: the main system asks for the passphrase itself.
    None,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::InitramfsTools => "initramfs-tools",
            Flavour::Systemd => "systemd",
            Flavour::MkinitcpioEncrypt => "mkinitcpio-encrypt",
            Flavour::None => "none",
        }
    }
}

/// Paths (inside the main system) whose existence tells the flavour apart.
pub const PROBE_PATHS: &[&str] = &[
    "/usr/share/initramfs-tools/hooks/cryptroot",
    "/etc/initramfs-tools/initramfs.conf",
    "/usr/lib/dracut/dracut-init.sh",
    "/usr/lib/systemd/systemd-cryptsetup",
    "/lib/systemd/systemd-cryptsetup",
    "/etc/mkinitcpio.conf",
];

/// Why no handover is possible; `Display` is the reason the plan shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoHandover {
    #[error("initramfs-tools is installed without cryptsetup-initramfs: its initramfs cannot unlock LUKS at all")]
    NoCryptsetupInitramfs,
    #[error("mkinitcpio.conf has neither the encrypt nor the sd-encrypt hook")]
    NoEncryptHook,
    #[error("dracut without systemd: its crypt module takes no key file from the initramfs")]
    DracutWithoutSystemd,
    #[error("no initramfs-tools, dracut or mkinitcpio found in the main system")]
    NoInitramfsGenerator,
    #[error("--no-handover")]
    NotWanted,
    #[error("the entry has no initrd to extend")]
    NoInitrd,
    #[error("--initrd-flavour none")]
    FlavourNone,
}

/// Decides the flavour from which probe paths exist and the HOOKS line of
/// mkinitcpio.conf. `Err` carries why no handover is possible.
pub fn detect(existing: &[String], mkinitcpio_conf: Option<&str>) -> Result<Flavour, NoHandover> {
    let has = |p: &str| existing.iter().any(|e| e == p);
    if has("/usr/share/initramfs-tools/hooks/cryptroot") {
        return Ok(Flavour::InitramfsTools);
    }
    if has("/etc/initramfs-tools/initramfs.conf") {
        return Err(NoHandover::NoCryptsetupInitramfs);
    }
    if let Some(conf) = mkinitcpio_conf {
        let hooks = conf
            .lines()
            .map(str::trim)
            .rfind(|l| l.starts_with("HOOKS="))
            .unwrap_or("");
        let words: Vec<&str> = hooks
            .trim_start_matches("HOOKS=")
            .trim_matches(|c| c == '(' || c == ')' || c == '"')
            .split_whitespace()
            .collect();
        if words.contains(&"sd-encrypt") {
            return Ok(Flavour::Systemd);
        }
        if words.contains(&"encrypt") {
            return Ok(Flavour::MkinitcpioEncrypt);
        }
        return Err(NoHandover::NoEncryptHook);
    }
    let systemd =
        has("/usr/lib/systemd/systemd-cryptsetup") || has("/lib/systemd/systemd-cryptsetup");
    if has("/usr/lib/dracut/dracut-init.sh") {
        return if systemd {
            Ok(Flavour::Systemd)
        } else {
            Err(NoHandover::DracutWithoutSystemd)
        };
    }
    Err(NoHandover::NoInitramfsGenerator)
}

/// Whether a handover is possible at all, before looking at volumes: not
/// when asked not to, not without an initrd to extend, and not for an
/// initramfs that cannot take a key file. `forced` is `--initrd-flavour`;
/// without it the flavour is detected. `Err` says why not, for the plan.
pub fn decide(
    no_handover: bool,
    has_initrd: bool,
    forced: Option<Flavour>,
    existing: &[String],
    mkinitcpio_conf: Option<&str>,
) -> Result<Flavour, NoHandover> {
    if no_handover {
        return Err(NoHandover::NotWanted);
    }
    if !has_initrd {
        return Err(NoHandover::NoInitrd);
    }
    match forced.map_or_else(|| detect(existing, mkinitcpio_conf), Ok)? {
        Flavour::None => Err(NoHandover::FlavourNone),
        f => Ok(f),
    }
}

/// What the handover became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// The main initramfs gets these volumes' keys in RAM.
    To {
        flavour: Flavour,
        volumes: Vec<Volume>,
    },
    /// Why not: the main system will ask for the passphrase itself.
    Impossible(String),
}

impl Handover {
    /// A handover needs at least one volume the passphrase opens.
    pub fn with(flavour: Flavour, volumes: Vec<Volume>) -> Self {
        if volumes.is_empty() {
            Handover::Impossible(
                "no volume of the main system's crypttab opens with this passphrase".into(),
            )
        } else {
            Handover::To { flavour, volumes }
        }
    }

    pub fn flavour(&self) -> Option<Flavour> {
        match self {
            Handover::To { flavour, .. } => Some(*flavour),
            Handover::Impossible(_) => None,
        }
    }

    pub fn volumes(&self) -> &[Volume] {
        match self {
            Handover::To { volumes, .. } => volumes,
            Handover::Impossible(_) => &[],
        }
    }

    pub fn why_not(&self) -> Option<&str> {
        match self {
            Handover::To { .. } => None,
            Handover::Impossible(why) => Some(why),
        }
    }

    /// The plan's note: what goes where, or, loudly, that the main system
    /// will ask again and where to answer it.
    pub fn note(&self) -> String {
        match self {
            Handover::To { flavour, volumes } => format!(
                "handover: the main initramfs ({}) gets {} in RAM and will not ask for {}",
                flavour.name(),
                files(*flavour, volumes).join(", "),
                volumes
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Handover::Impossible(why) => format!(
                "handover impossible: {why}. The main system's initramfs WILL ASK for the passphrase again: on its console, or through its portcullisd listener (`portcullis unlock HOST`)"
            ),
        }
    }
}

/// One volume whose key goes to the main initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The main system's crypttab name.
    pub name: String,
    /// crypttab's source field (UUID=…, /dev/…).
    pub source: String,
    /// crypttab's options field.
    pub options: String,
    pub luks_uuid: Option<String>,
}

impl Volume {
    /// A crypttab entry and the LUKS device it names.
    pub fn new(e: &crate::unlock::crypttab::Entry, dev: &super::lsblk::Dev) -> Self {
        Volume {
            name: e.name.clone(),
            source: e.source.clone(),
            options: e.options.clone(),
            luks_uuid: dev.uuid.clone(),
        }
    }
}

/// The files the archive will hold (names only): printed in the plan.
pub fn files(flavour: Flavour, volumes: &[Volume]) -> Vec<String> {
    match flavour {
        Flavour::InitramfsTools => std::iter::once("/cryptroot/crypttab".to_string())
            .chain(
                volumes
                    .iter()
                    .map(|v| format!("/cryptroot/keyfiles/{}.key", v.name)),
            )
            .collect(),
        Flavour::Systemd => volumes
            .iter()
            .flat_map(|v| {
                std::iter::once(format!("/etc/cryptsetup-keys.d/{}.key", v.name)).chain(
                    v.luks_uuid
                        .iter()
                        .map(|u| format!("/etc/cryptsetup-keys.d/luks-{u}.key")),
                )
            })
            .collect(),
        Flavour::MkinitcpioEncrypt => vec!["/crypto_keyfile.bin".into()],
        Flavour::None => vec![],
    }
}

/// The crypttab that replaces initramfs-tools' own: every handed-over volume
/// with its key file; `keyscript=` dropped (it would run instead of reading
/// the file).
pub fn initramfs_tools_crypttab(volumes: &[Volume]) -> String {
    let mut out = String::from("# written by portcullis rescue kexec; lives only in RAM\n");
    for v in volumes {
        let mut opts: Vec<&str> = v
            .options
            .split(',')
            .filter(|o| !o.is_empty() && !o.starts_with("keyscript="))
            .collect();
        if !opts
            .iter()
            .any(|o| matches!(*o, "luks" | "plain" | "tcrypt" | "bitlk"))
        {
            opts.insert(0, "luks");
        }
        out.push_str(&format!(
            "{} {} /cryptroot/keyfiles/{}.key {}\n",
            v.name,
            v.source,
            v.name,
            opts.join(",")
        ));
    }
    out
}

/// Builds the archive. The key file content is the passphrase byte for byte:
/// cryptsetup reads a whole key file as the passphrase.
#[tracing::instrument(skip_all)]
pub fn archive(
    flavour: Flavour,
    volumes: &[Volume],
    pass: &Passphrase,
) -> Result<Zeroizing<Vec<u8>>> {
    if volumes.is_empty() {
        bail!("no volume to hand over");
    }
    for v in volumes {
        super::shell::mapper_name(&v.name)?;
        if v.source
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
            || v.options
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            bail!(
                "crypttab entry {:?} has an unusable source or options",
                v.name
            );
        }
    }
    let mut a = Archive::default();
    match flavour {
        Flavour::InitramfsTools => {
            a.dir("cryptroot", 0o700);
            a.dir("cryptroot/keyfiles", 0o700);
            a.file(
                "cryptroot/crypttab",
                0o644,
                initramfs_tools_crypttab(volumes).as_bytes(),
            );
            for v in volumes {
                a.file(
                    &format!("cryptroot/keyfiles/{}.key", v.name),
                    0o400,
                    pass.expose(),
                );
            }
        }
        Flavour::Systemd => {
            a.dir("etc", 0o755);
            a.dir("etc/cryptsetup-keys.d", 0o700);
            for name in files(flavour, volumes) {
                a.file(&name, 0o400, pass.expose());
            }
        }
        Flavour::MkinitcpioEncrypt => a.file("crypto_keyfile.bin", 0o400, pass.expose()),
        Flavour::None => bail!("no handover for this initramfs"),
    }
    Ok(a.finish())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::rescue::cpio::list;

    fn vols() -> Vec<Volume> {
        vec![Volume {
            name: "root".into(),
            source: "UUID=7d0a6f0e-3333-4a4a-9f9f-0123456789ab".into(),
            options: "luks,discard,keyscript=/bin/foo".into(),
            luks_uuid: Some("7d0a6f0e-3333-4a4a-9f9f-0123456789ab".into()),
        }]
    }

    #[test]
    fn detection() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            detect(
                &s(&[
                    "/usr/share/initramfs-tools/hooks/cryptroot",
                    "/etc/initramfs-tools/initramfs.conf"
                ]),
                None
            ),
            Ok(Flavour::InitramfsTools)
        );
        assert_eq!(
            detect(&s(&["/etc/initramfs-tools/initramfs.conf"]), None),
            Err(NoHandover::NoCryptsetupInitramfs)
        );
        assert!(detect(&s(&["/etc/initramfs-tools/initramfs.conf"]), None)
            .unwrap_err()
            .to_string()
            .contains("cryptsetup-initramfs"));
        assert_eq!(
            detect(
                &s(&[
                    "/usr/lib/dracut/dracut-init.sh",
                    "/usr/lib/systemd/systemd-cryptsetup"
                ]),
                None
            ),
            Ok(Flavour::Systemd)
        );
        assert_eq!(
            detect(&s(&["/usr/lib/dracut/dracut-init.sh"]), None),
            Err(NoHandover::DracutWithoutSystemd)
        );
        let conf = "# HOOKS=(base encrypt)\nHOOKS=(base systemd autodetect block sd-encrypt filesystems)\n";
        assert_eq!(detect(&[], Some(conf)), Ok(Flavour::Systemd));
        assert_eq!(
            detect(&[], Some("HOOKS=\"base udev block encrypt filesystems\"")),
            Ok(Flavour::MkinitcpioEncrypt)
        );
        assert_eq!(
            detect(&[], Some("HOOKS=(base udev)")),
            Err(NoHandover::NoEncryptHook)
        );
        assert_eq!(detect(&[], None), Err(NoHandover::NoInitramfsGenerator));
    }

    #[test]
    fn initramfs_tools_archive() {
        let p = Passphrase::new(b"pass phrase".to_vec()).unwrap();
        let a = archive(Flavour::InitramfsTools, &vols(), &p).unwrap();
        let l = list(&a).unwrap();
        let names: Vec<_> = l.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "cryptroot",
                "cryptroot/keyfiles",
                "cryptroot/crypttab",
                "cryptroot/keyfiles/root.key"
            ]
        );
        assert_eq!(
            String::from_utf8_lossy(&l[2].2).lines().nth(1).unwrap(),
            "root UUID=7d0a6f0e-3333-4a4a-9f9f-0123456789ab /cryptroot/keyfiles/root.key luks,discard"
        );
        assert_eq!(l[3].2, b"pass phrase");
        assert_eq!(l[3].1 & 0o777, 0o400);
        assert_eq!(
            files(Flavour::InitramfsTools, &vols()),
            ["/cryptroot/crypttab", "/cryptroot/keyfiles/root.key"]
        );
    }

    #[test]
    fn systemd_and_mkinitcpio_archives() {
        let p = Passphrase::new(b"pw".to_vec()).unwrap();
        let l = list(&archive(Flavour::Systemd, &vols(), &p).unwrap()).unwrap();
        let names: Vec<_> = l.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/cryptsetup-keys.d",
                "etc/cryptsetup-keys.d/root.key",
                "etc/cryptsetup-keys.d/luks-7d0a6f0e-3333-4a4a-9f9f-0123456789ab.key"
            ]
        );
        let l = list(&archive(Flavour::MkinitcpioEncrypt, &vols(), &p).unwrap()).unwrap();
        assert_eq!(l[0].0, "crypto_keyfile.bin");
        assert!(archive(Flavour::None, &vols(), &p).is_err());
        assert!(archive(Flavour::Systemd, &[], &p).is_err());
        let mut bad = vols();
        bad[0].source = "UUID=x\nevil".into();
        assert!(archive(Flavour::Systemd, &bad, &p).is_err());
    }

    #[test]
    fn decide_says_why_not_in_the_order_an_admin_can_act_on() {
        let debian = ["/usr/share/initramfs-tools/hooks/cryptroot".to_string()];
        assert_eq!(
            decide(false, true, None, &debian, None),
            Ok(Flavour::InitramfsTools)
        );
        assert_eq!(
            decide(true, true, None, &debian, None),
            Err(NoHandover::NotWanted)
        );
        assert_eq!(
            decide(false, false, None, &debian, None),
            Err(NoHandover::NoInitrd)
        );
        // --initrd-flavour overrides detection, also to say no.
        assert_eq!(
            decide(false, true, Some(Flavour::Systemd), &debian, None),
            Ok(Flavour::Systemd)
        );
        assert_eq!(
            decide(false, true, Some(Flavour::None), &debian, None),
            Err(NoHandover::FlavourNone)
        );
        assert_eq!(NoHandover::NotWanted.to_string(), "--no-handover");
        assert_eq!(
            NoHandover::NoInitrd.to_string(),
            "the entry has no initrd to extend"
        );
        assert_eq!(NoHandover::FlavourNone.to_string(), "--initrd-flavour none");
        let e = decide(false, true, None, &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no initramfs-tools, dracut or mkinitcpio"),
            "{e}"
        );
    }

    #[test]
    fn a_handover_without_volumes_is_impossible_and_says_the_system_will_ask() {
        let h = Handover::with(Flavour::Systemd, vec![]);
        assert_eq!(h.flavour(), None);
        assert!(h.volumes().is_empty());
        assert_eq!(
            h.why_not(),
            Some("no volume of the main system's crypttab opens with this passphrase")
        );
        assert!(h.note().contains("WILL ASK for the passphrase again"));
        let h = Handover::with(Flavour::InitramfsTools, vols());
        assert_eq!(h.flavour(), Some(Flavour::InitramfsTools));
        assert_eq!(h.why_not(), None);
        assert_eq!(
            h.note(),
            "handover: the main initramfs (initramfs-tools) gets /cryptroot/crypttab, \
             /cryptroot/keyfiles/root.key in RAM and will not ask for root"
        );
    }
}
