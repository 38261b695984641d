//! The running machine's facts that preflight compares an image against:
//! its LUKS devices and their keyslots' key-derivation costs, its crypttab,
//! its RAM, the NIC carrying the default route and that NIC's driver and
//! addresses. [`System`] is the seam: [`RealSystem`] reads them under a root
//! prefix (`--root`, so tests run on fixture trees) and runs `ip` through
//! [`crate::sys::Runner`]; unit tests use [`fake::FakeSystem`].
//!
//! Nothing here decides anything; the checks do.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::sys::{read_head, Root, Runner};
use crate::unlock::volume::{self, DeviceSpec};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// A LUKS2 header's JSON area is at most 4 MiB (cryptsetup's own limit);
/// a device claiming more is not read further.
const MAX_LUKS2_HEADER: u64 = 4 << 20;
/// Where LUKS2's JSON area starts (after the 4 KiB binary header).
const LUKS2_JSON_OFFSET: usize = 4096;

/// One keyslot of a LUKS device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyslot {
    pub id: u32,
    /// `argon2id`, `argon2i` or `pbkdf2`.
    pub kdf: String,
    /// KiB the KDF needs (argon2 only).
    pub memory_kib: Option<u64>,
}

/// One LUKS device of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksDevice {
    /// `/dev/vda2`, as the system sees it.
    pub path: PathBuf,
    pub version: u16,
    pub uuid: String,
    /// LUKS2 label; empty when unset.
    pub label: String,
    /// LUKS2 keyslots (LUKS1 slots are pbkdf2 and need no memory).
    pub keyslots: Vec<Keyslot>,
}

/// A default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    /// `None` for an on-link default route (a point-to-point link).
    pub gateway: Option<IpAddr>,
}

/// An address of an interface, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix: u8,
}

/// What drives a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicDriver {
    /// A loadable module (`virtio_net`, `e1000e`).
    Module(String),
    /// A driver without a module: built into this kernel.
    BuiltIn(String),
    /// No device behind it (bridge, bond, VLAN, tunnel).
    Virtual,
    /// The interface or its driver could not be read.
    Unknown,
}

/// The machine's facts. Every method answers "not known" rather than
/// failing: a check then says what it could not tell.
pub trait System {
    /// Every LUKS device found on the block devices.
    fn luks_devices(&self) -> Vec<LuksDevice>;
    /// The device a spec names (`UUID=…`, a path), as the system sees it.
    fn resolve(&self, spec: &DeviceSpec) -> Option<PathBuf>;
    /// The text of `/etc/crypttab`.
    fn crypttab(&self) -> Option<String>;
    /// `MemTotal` of /proc/meminfo, KiB.
    fn mem_total_kib(&self) -> Option<u64>;
    /// Default routes, IPv4 first.
    fn default_routes(&self) -> Vec<Route>;
    /// The addresses of an interface.
    fn addresses(&self, interface: &str) -> Vec<Address>;
    /// The driver behind an interface.
    fn nic_driver(&self, interface: &str) -> NicDriver;
    /// Every driver the initramfs needs for `interface` to work: through a
    /// bridge, bond or VLAN those of the devices under it, and for each
    /// device its own and its parent buses' (virtio_net needs virtio_pci).
    /// Only `Virtual` when no device is under it.
    fn nic_drivers(&self, interface: &str) -> Vec<NicDriver> {
        vec![self.nic_driver(interface)]
    }
    /// `modules.builtin` of kernel `release` installed on this system.
    fn modules_builtin(&self, release: &str) -> Option<String>;
    /// A file of the running system (`/etc/portcullis/authorized_keys`),
    /// to tell whether the image is older than the admin's files.
    fn read_file(&self, path: &Path) -> Option<Vec<u8>>;
    /// The running kernel's command line.
    fn cmdline(&self) -> Option<String>;
    /// The running kernel's release: sysfs's "built in" is only true of it.
    fn running_kernel(&self) -> Option<String> {
        None
    }
}

/// The machine itself, every path under `root`.
pub struct RealSystem {
    root: Root,
    runner: Box<dyn Runner>,
}

impl RealSystem {
    pub fn new(root: Root, runner: Box<dyn Runner>) -> Self {
        RealSystem { root, runner }
    }

    fn text(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path)).ok()
    }
}

impl System for RealSystem {
    fn luks_devices(&self) -> Vec<LuksDevice> {
        let Ok(dir) = std::fs::read_dir(self.root.join("/sys/class/block")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|name| {
                let dev = PathBuf::from("/dev").join(&name);
                read_luks(&self.root.join(&dev), dev)
            })
            .collect()
    }

    fn resolve(&self, spec: &DeviceSpec) -> Option<PathBuf> {
        // The device node itself, not a /dev/disk/by-* link to it, so it
        // compares with the paths of `luks_devices`.
        let found = volume::resolve(&self.root, spec)?;
        let real = std::fs::canonicalize(self.root.join(&found)).ok()?;
        let base = std::fs::canonicalize(self.root.join("/")).ok()?;
        match real.strip_prefix(&base) {
            Ok(rel) => Some(Path::new("/").join(rel)),
            Err(_) => Some(found),
        }
    }

    fn crypttab(&self) -> Option<String> {
        self.text("/etc/crypttab")
    }

    fn mem_total_kib(&self) -> Option<u64> {
        mem_total_kib(&self.text("/proc/meminfo")?)
    }

    fn default_routes(&self) -> Vec<Route> {
        let mut routes = self
            .text("/proc/net/route")
            .map(|t| ipv4_default_routes(&t))
            .unwrap_or_default();
        routes.extend(
            self.text("/proc/net/ipv6_route")
                .map(|t| ipv6_default_routes(&t))
                .unwrap_or_default(),
        );
        routes
    }

    fn addresses(&self, interface: &str) -> Vec<Address> {
        let mut out = Vec::new();
        // IPv4 addresses are only listed through netlink; `ip` speaks it.
        // Under a test root there is no machine to ask.
        if self.root.is_real() {
            let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
                .into_iter()
                .map(Path::new)
                .find(|p| p.exists());
            if let Some(ip) = ip {
                let args: Vec<String> = ["-o", "-4", "addr", "show", "dev", interface]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if let Ok(o) = self.runner.run(ip, &args, None) {
                    if o.success() {
                        out.extend(parse_ip_addr(&String::from_utf8_lossy(&o.stdout)));
                    }
                }
            }
        }
        if let Some(t) = self.text("/proc/net/if_inet6") {
            out.extend(ipv6_addresses(&t, interface));
        }
        out
    }

    fn nic_driver(&self, interface: &str) -> NicDriver {
        if interface.contains('/') || interface.starts_with('.') {
            return NicDriver::Unknown;
        }
        let dev = self
            .root
            .join(Path::new("/sys/class/net").join(interface).join("device"));
        if !self
            .root
            .join(Path::new("/sys/class/net").join(interface))
            .exists()
        {
            return NicDriver::Unknown;
        }
        if !dev.exists() {
            return NicDriver::Virtual;
        }
        let base = |p: PathBuf| -> Option<String> {
            let target = std::fs::read_link(p).ok()?;
            Some(target.file_name()?.to_string_lossy().into_owned())
        };
        if let Some(m) = base(dev.join("driver/module")) {
            return NicDriver::Module(m);
        }
        match base(dev.join("driver")) {
            Some(d) => NicDriver::BuiltIn(d),
            None => NicDriver::Unknown,
        }
    }

    fn nic_drivers(&self, interface: &str) -> Vec<NicDriver> {
        let net = self.root.join("/sys/class/net");
        let mut out: Vec<NicDriver> = Vec::new();
        let mut todo = vec![interface.to_string()];
        let mut seen: Vec<String> = Vec::new();
        // Bounded: a hostile or looping sysfs cannot keep this going.
        while let Some(i) = todo.pop() {
            if seen.contains(&i) || seen.len() >= 64 {
                continue;
            }
            seen.push(i.clone());
            match self.nic_driver(&i) {
                NicDriver::Virtual => {
                    // Bond slaves and VLAN parents are lower_IF links;
                    // bridge ports are brif/IF.
                    let lower = std::fs::read_dir(net.join(&i))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|n| n.strip_prefix("lower_"))
                                .map(str::to_string)
                        });
                    let ports = std::fs::read_dir(net.join(&i).join("brif"))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| e.file_name().to_str().map(str::to_string));
                    todo.extend(lower.chain(ports));
                }
                driver => {
                    out.push(driver);
                    out.extend(self.bus_drivers(&net.join(&i).join("device")));
                }
            }
        }
        if out.is_empty() {
            out.push(NicDriver::Virtual);
        }
        let mut unique: Vec<NicDriver> = Vec::new();
        for d in out {
            if !unique.contains(&d) {
                unique.push(d);
            }
        }
        unique
    }

    fn modules_builtin(&self, release: &str) -> Option<String> {
        if release.contains('/') || release.starts_with('.') {
            return None;
        }
        ["/lib/modules", "/usr/lib/modules"]
            .iter()
            .find_map(|d| self.text(&format!("{d}/{release}/modules.builtin")))
    }

    fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(path)).ok()
    }

    fn cmdline(&self) -> Option<String> {
        self.text("/proc/cmdline").map(|s| s.trim().to_string())
    }

    fn running_kernel(&self) -> Option<String> {
        self.text("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
    }
}

impl RealSystem {
    /// The drivers of the devices above `device` in sysfs (the PCI
    /// function under a virtio device, a USB host controller), up to
    /// /sys/devices.
    fn bus_drivers(&self, device: &Path) -> Vec<NicDriver> {
        let top = self.root.join("/sys/devices");
        let (Ok(top), Ok(dev)) = (std::fs::canonicalize(&top), std::fs::canonicalize(device))
        else {
            return Vec::new();
        };
        let base = |p: PathBuf| -> Option<String> {
            let target = std::fs::read_link(p).ok()?;
            Some(target.file_name()?.to_string_lossy().into_owned())
        };
        dev.ancestors()
            .skip(1)
            .take_while(|p| p.starts_with(&top) && *p != top)
            .take(16)
            .filter_map(|p| match base(p.join("driver/module")) {
                Some(m) => Some(NicDriver::Module(m)),
                None => base(p.join("driver")).map(NicDriver::BuiltIn),
            })
            .collect()
    }
}

/// Reads the LUKS header of the device at `read` (named `dev`), with its
/// LUKS2 keyslots; `None` when it is not LUKS or cannot be read.
fn read_luks(read: &Path, dev: PathBuf) -> Option<LuksDevice> {
    let head = read_head(read, LUKS2_JSON_OFFSET).ok()?;
    let h = volume::parse_luks_header(&head)?;
    let keyslots = if h.version == 2 {
        let size = head
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
            .min(MAX_LUKS2_HEADER);
        let whole = read_head(read, usize::try_from(size).unwrap_or(0)).ok()?;
        luks2_keyslots(&whole)
    } else {
        Vec::new()
    };
    Some(LuksDevice {
        path: dev,
        version: h.version,
        uuid: h.uuid,
        label: h.label,
        keyslots,
    })
}

/// The keyslots of a LUKS2 header (binary header + JSON area), from its
/// JSON metadata: `{"keyslots": {"0": {"kdf": {"type": "argon2id",
/// "memory": 1048576, …}}}}`. A header without readable JSON has none.
pub fn luks2_keyslots(header: &[u8]) -> Vec<Keyslot> {
    let Some(json) = header.get(LUKS2_JSON_OFFSET..) else {
        return Vec::new();
    };
    let end = json.iter().position(|&b| b == 0).unwrap_or(json.len());
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json.get(..end).unwrap_or(&[])) else {
        return Vec::new();
    };
    let Some(slots) = v.get("keyslots").and_then(|k| k.as_object()) else {
        return Vec::new();
    };
    let mut out: Vec<Keyslot> = slots
        .iter()
        .filter_map(|(id, s)| {
            let kdf = s.get("kdf")?;
            Some(Keyslot {
                id: id.parse().ok()?,
                kdf: kdf.get("type")?.as_str()?.to_string(),
                memory_kib: kdf.get("memory").and_then(|m| m.as_u64()),
            })
        })
        .collect();
    out.sort_by_key(|s| s.id);
    out
}

/// `MemTotal` in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        l.strip_prefix("MemTotal:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Default routes of /proc/net/route (hex, little-endian addresses).
pub fn ipv4_default_routes(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, gw, flags, mask) =
                (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
            let up = u32::from_str_radix(flags, 16).ok()? & 1 == 1;
            if !up || *dest != "00000000" || *mask != "00000000" {
                return None;
            }
            let gw = u32::from_str_radix(gw, 16).ok()?;
            let gateway = (gw != 0).then(|| IpAddr::V4(Ipv4Addr::from(gw.swap_bytes())));
            Some(Route {
                interface: iface.to_string(),
                gateway,
            })
        })
        .collect()
}

fn hex_v6(s: &str) -> Option<Ipv6Addr> {
    u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from)
}

/// Default routes of /proc/net/ipv6_route (`::/0`, not on `lo`, where the
/// kernel keeps its "unreachable" entries).
pub fn ipv6_default_routes(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, plen, hop, iface) = (f.first()?, f.get(1)?, f.get(4)?, f.get(9)?);
            if hex_v6(dest)? != Ipv6Addr::UNSPECIFIED || *plen != "00" || *iface == "lo" {
                return None;
            }
            let hop = hex_v6(hop)?;
            Some(Route {
                interface: iface.to_string(),
                gateway: (!hop.is_unspecified()).then_some(IpAddr::V6(hop)),
            })
        })
        .collect()
}

/// Global IPv6 addresses of `interface` from /proc/net/if_inet6.
pub fn ipv6_addresses(text: &str, interface: &str) -> Vec<Address> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, plen, scope, iface) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
            // Scope 0 is global; link-local (0x20) addresses are never ip=.
            if *iface != interface || *scope != "00" {
                return None;
            }
            Some(Address {
                ip: IpAddr::V6(hex_v6(addr)?),
                prefix: u8::from_str_radix(plen, 16).ok()?,
            })
        })
        .collect()
}

/// Addresses in `ip -o addr show` output (`… inet 10.0.2.15/24 brd …`).
pub fn parse_ip_addr(text: &str) -> Vec<Address> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            let (ip, prefix) = words.next()?.split_once('/')?;
            Some(Address {
                ip: ip.parse().ok()?,
                prefix: prefix.parse().ok()?,
            })
        })
        .collect()
}

/// A recording-free fake for unit tests of the checks.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Default, Clone)]
    pub struct FakeSystem {
        pub luks: Vec<LuksDevice>,
        pub crypttab: Option<String>,
        pub mem_kib: Option<u64>,
        pub routes: Vec<Route>,
        pub addresses: HashMap<String, Vec<Address>>,
        pub drivers: HashMap<String, NicDriver>,
        /// [`System::nic_drivers`] answers, where they differ from `drivers`.
        pub stacks: HashMap<String, Vec<NicDriver>>,
        pub builtin: HashMap<String, String>,
        pub files: HashMap<PathBuf, Vec<u8>>,
        pub cmdline: Option<String>,
        pub running: Option<String>,
    }

    impl System for FakeSystem {
        fn luks_devices(&self) -> Vec<LuksDevice> {
            self.luks.clone()
        }
        fn resolve(&self, spec: &DeviceSpec) -> Option<PathBuf> {
            self.luks
                .iter()
                .find(|d| match spec {
                    DeviceSpec::Uuid(u) => d.uuid == *u,
                    DeviceSpec::Label(l) => d.label == *l,
                    DeviceSpec::Path(p) => d.path == *p,
                    _ => false,
                })
                .map(|d| d.path.clone())
        }
        fn crypttab(&self) -> Option<String> {
            self.crypttab.clone()
        }
        fn mem_total_kib(&self) -> Option<u64> {
            self.mem_kib
        }
        fn default_routes(&self) -> Vec<Route> {
            self.routes.clone()
        }
        fn addresses(&self, interface: &str) -> Vec<Address> {
            self.addresses.get(interface).cloned().unwrap_or_default()
        }
        fn nic_driver(&self, interface: &str) -> NicDriver {
            self.drivers
                .get(interface)
                .cloned()
                .unwrap_or(NicDriver::Unknown)
        }
        fn nic_drivers(&self, interface: &str) -> Vec<NicDriver> {
            match self.stacks.get(interface) {
                Some(all) => all.clone(),
                None => vec![self.nic_driver(interface)],
            }
        }
        fn modules_builtin(&self, release: &str) -> Option<String> {
            self.builtin.get(release).cloned()
        }
        fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
            self.files.get(path).cloned()
        }
        fn cmdline(&self) -> Option<String> {
            self.cmdline.clone()
        }
        fn running_kernel(&self) -> Option<String> {
            self.running.clone()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_of_both_families() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  ens3\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  ens3\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            ipv4_default_routes(v4),
            vec![Route {
                interface: "ens3".into(),
                gateway: Some("10.0.2.2".parse().unwrap()),
            }]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     ens3\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     ens3\n";
        assert_eq!(
            ipv6_default_routes(v6),
            vec![Route {
                interface: "ens3".into(),
                gateway: Some("fe80::1".parse().unwrap()),
            }]
        );
    }

    #[test]
    fn addresses_from_ip_and_if_inet6() {
        let ip = "2: ens3    inet 10.0.2.15/24 brd 10.0.2.255 scope global dynamic ens3\\       valid_lft 86000sec\n";
        assert_eq!(
            parse_ip_addr(ip),
            vec![Address {
                ip: "10.0.2.15".parse().unwrap(),
                prefix: 24
            }]
        );
        let if6 = "20010db8000000000000000000000015 02 40 00 00     ens3\n\
                   fe800000000000000000000000000015 02 40 20 80     ens3\n\
                   20010db8000000000000000000000099 03 40 00 00     ens4\n";
        assert_eq!(
            ipv6_addresses(if6, "ens3"),
            vec![Address {
                ip: "2001:db8::15".parse().unwrap(),
                prefix: 64
            }]
        );
        assert_eq!(
            mem_total_kib("MemTotal:        2013704 kB\n"),
            Some(2013704)
        );
    }

    #[test]
    fn luks2_keyslots_from_the_json_area() {
        let mut hdr = vec![0u8; LUKS2_JSON_OFFSET];
        hdr.extend_from_slice(
            br#"{"keyslots":{"1":{"type":"luks2","kdf":{"type":"pbkdf2","iterations":1000}},"0":{"type":"luks2","kdf":{"type":"argon2id","time":4,"memory":1048576,"cpus":4}}}}"#,
        );
        hdr.extend_from_slice(&[0; 64]);
        assert_eq!(
            luks2_keyslots(&hdr),
            vec![
                Keyslot {
                    id: 0,
                    kdf: "argon2id".into(),
                    memory_kib: Some(1048576)
                },
                Keyslot {
                    id: 1,
                    kdf: "pbkdf2".into(),
                    memory_kib: None
                },
            ]
        );
        assert!(luks2_keyslots(b"short").is_empty());
        assert!(luks2_keyslots(&vec![0xff; 5000]).is_empty());
    }

    #[test]
    fn nic_drivers_from_sysfs_links() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let net = root.path().join("sys/class/net");
        let drv = root.path().join("sys/bus/pci/drivers");
        std::fs::create_dir_all(drv.join("e1000e")).unwrap();
        std::fs::create_dir_all(drv.join("virtio-pci")).unwrap();
        std::fs::create_dir_all(root.path().join("sys/module/e1000e")).unwrap();
        symlink(
            root.path().join("sys/module/e1000e"),
            drv.join("e1000e/module"),
        )
        .unwrap();
        for (iface, driver) in [("eno1", Some("e1000e")), ("ens3", Some("virtio-pci"))] {
            std::fs::create_dir_all(net.join(iface).join("device")).unwrap();
            if let Some(d) = driver {
                symlink(drv.join(d), net.join(iface).join("device/driver")).unwrap();
            }
        }
        std::fs::create_dir_all(net.join("br0")).unwrap();
        let sys = RealSystem::new(Root::new(root.path()), Box::new(crate::sys::SystemRunner));
        assert_eq!(sys.nic_driver("eno1"), NicDriver::Module("e1000e".into()));
        assert_eq!(
            sys.nic_driver("ens3"),
            NicDriver::BuiltIn("virtio-pci".into())
        );
        assert_eq!(sys.nic_driver("br0"), NicDriver::Virtual);
        assert_eq!(sys.nic_driver("wlan9"), NicDriver::Unknown);
        assert_eq!(sys.nic_driver("../x"), NicDriver::Unknown);
    }

    #[test]
    fn nic_drivers_under_bonds_bridges_and_buses() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mkdir = |p: &str| std::fs::create_dir_all(r.join(p)).unwrap();
        // Drivers with their modules.
        for (bus, drv, module) in [
            ("pci", "virtio-pci", "virtio_pci"),
            ("virtio", "virtio_net", "virtio_net"),
            ("pci", "e1000e", "e1000e"),
        ] {
            mkdir(&format!("sys/bus/{bus}/drivers/{drv}"));
            mkdir(&format!("sys/module/{module}"));
            symlink(
                r.join(format!("sys/module/{module}")),
                r.join(format!("sys/bus/{bus}/drivers/{drv}/module")),
            )
            .unwrap();
        }
        // ens3: a virtio device on a PCI function; eno1: a PCI NIC.
        let pci = "sys/devices/pci0000:00/0000:00:03.0";
        mkdir(&format!("{pci}/virtio0"));
        symlink(
            r.join("sys/bus/pci/drivers/virtio-pci"),
            r.join(pci).join("driver"),
        )
        .unwrap();
        symlink(
            r.join("sys/bus/virtio/drivers/virtio_net"),
            r.join(pci).join("virtio0/driver"),
        )
        .unwrap();
        let e1000 = "sys/devices/pci0000:00/0000:00:04.0";
        mkdir(e1000);
        symlink(
            r.join("sys/bus/pci/drivers/e1000e"),
            r.join(e1000).join("driver"),
        )
        .unwrap();
        mkdir("sys/class/net/ens3");
        symlink(
            r.join(pci).join("virtio0"),
            r.join("sys/class/net/ens3/device"),
        )
        .unwrap();
        mkdir("sys/class/net/eno1");
        symlink(r.join(e1000), r.join("sys/class/net/eno1/device")).unwrap();
        // br0 over bond0 (lower_eno1) and ens3.
        mkdir("sys/class/net/bond0");
        symlink(
            r.join("sys/class/net/eno1"),
            r.join("sys/class/net/bond0/lower_eno1"),
        )
        .unwrap();
        mkdir("sys/class/net/br0/brif");
        symlink(
            r.join("sys/class/net/bond0"),
            r.join("sys/class/net/br0/brif/bond0"),
        )
        .unwrap();
        symlink(
            r.join("sys/class/net/ens3"),
            r.join("sys/class/net/br0/brif/ens3"),
        )
        .unwrap();
        mkdir("sys/class/net/dummy0");
        let sys = RealSystem::new(Root::new(r), Box::new(crate::sys::SystemRunner));
        let m = |s: &str| NicDriver::Module(s.into());
        assert_eq!(
            sys.nic_drivers("ens3"),
            vec![m("virtio_net"), m("virtio_pci")]
        );
        let mut all = sys.nic_drivers("br0");
        all.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(all, vec![m("e1000e"), m("virtio_net"), m("virtio_pci")]);
        assert_eq!(sys.nic_drivers("dummy0"), vec![NicDriver::Virtual]);
    }

    /// A header written by the real cryptsetup, read through the real
    /// implementation under a fixture root.
    #[test]
    fn reads_a_real_luks2_header() {
        let cs = Path::new("/usr/sbin/cryptsetup");
        assert!(
            cs.exists(),
            "this test needs cryptsetup (apt-get install cryptsetup-bin)"
        );
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sys/class/block/loop9")).unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        let dev = root.path().join("dev/loop9");
        std::fs::write(&dev, vec![0u8; 20 << 20]).unwrap();
        let out = std::process::Command::new(cs)
            .args([
                "luksFormat",
                "-q",
                "--type",
                "luks2",
                "--pbkdf",
                "argon2id",
                "--pbkdf-memory",
                "65536",
                "--pbkdf-force-iterations",
                "4",
                "--label",
                "fixture",
                "--key-file",
                "-",
            ])
            .arg(&dev)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"fixture pass")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let sys = RealSystem::new(Root::new(root.path()), Box::new(crate::sys::SystemRunner));
        let devs = sys.luks_devices();
        assert_eq!(devs.len(), 1, "{devs:?}");
        assert_eq!(devs[0].path, Path::new("/dev/loop9"));
        assert_eq!(devs[0].label, "fixture");
        assert_eq!(
            devs[0].keyslots,
            vec![Keyslot {
                id: 0,
                kdf: "argon2id".into(),
                memory_kib: Some(65536)
            }]
        );
        let by_label = sys.resolve(&DeviceSpec::Label("fixture".into()));
        assert_eq!(by_label.as_deref(), Some(Path::new("/dev/loop9")));
    }
}
