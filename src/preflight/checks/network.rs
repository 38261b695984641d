//! `network-config`, `nic-driver`, `static-ip`: will the initramfs be on
//! the network? Something must configure it (`ip=` or `rd.neednet=1` on
//! the command line, networkd files, initramfs-tools' `IP=`), the driver of
//! the NIC that carries the default route today must be in the image (or
//! built in), and a static `ip=` should say what the system uses now.

use super::kmod::{self, Found};
use super::{fail, pass, skip, warn, Ctx, Generator};
use crate::preflight::report::Check;
use crate::preflight::system::NicDriver;
use crate::text::clip_plain;
use std::net::IpAddr;

/// What one `ip=` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpParam {
    /// `ip=off` / `ip=none`: no network.
    Off,
    /// Automatic configuration (`dhcp`, `on`, `dhcp6`, …; for a device or all).
    Auto,
    /// `ip=CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:off…`.
    Static {
        client: IpAddr,
        gateway: Option<IpAddr>,
        prefix: Option<u8>,
        device: Option<String>,
    },
}

/// Splits on `:` outside `[…]` (IPv6 addresses in dracut's form).
fn fields(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0u32;
    for c in value.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn addr(s: &str) -> Option<IpAddr> {
    s.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn is_auto(method: &str) -> bool {
    matches!(
        method,
        "on" | "any"
            | "dhcp"
            | "dhcp6"
            | "auto6"
            | "both"
            | "bootp"
            | "rarp"
            | "ibft"
            | "either6"
            | "link6"
            | "single-dhcp"
    )
}

/// The netmask field: dotted IPv4 mask or a prefix length.
fn prefix(s: &str) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return Some(n);
    }
    let m: std::net::Ipv4Addr = s.parse().ok()?;
    let bits = u32::from(m);
    // A mask is ones then zeros.
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| bits.leading_ones() as u8)
}

/// Parses the value of one `ip=` (kernel nfsroot.txt and dracut forms).
pub fn parse_ip(value: &str) -> IpParam {
    let f = fields(value);
    let get = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
    if f.len() == 1 {
        return if matches!(value, "off" | "none") {
            IpParam::Off
        } else {
            IpParam::Auto
        };
    }
    let Some(client) = addr(get(0)) else {
        // `ip=eth0:dhcp` (dracut), or no client address: autoconfiguration.
        let method = if addr(get(0)).is_none() && f.len() <= 4 && !get(0).is_empty() {
            get(1)
        } else {
            get(6)
        };
        return if matches!(method, "off" | "none") {
            IpParam::Off
        } else {
            IpParam::Auto
        };
    };
    if is_auto(get(6)) {
        return IpParam::Auto;
    }
    let device = Some(get(5)).filter(|d| !d.is_empty()).map(str::to_string);
    IpParam::Static {
        client,
        gateway: addr(get(2)),
        prefix: prefix(get(3)),
        device,
    }
}

/// The `ip=` values that take effect: dracut takes one per interface, so
/// all of them; the kernel, initramfs-tools and mkinitcpio read only the
/// last one (`ip=dhcp ip=off` is off).
fn ip_params(ctx: &Ctx<'_>) -> Vec<(String, IpParam)> {
    let mut all: Vec<(String, IpParam)> = ctx
        .words()
        .filter_map(|w| w.strip_prefix("ip="))
        .map(|v| (v.to_string(), parse_ip(v)))
        .collect();
    if ctx.generator != Generator::Dracut && all.len() > 1 {
        all.drain(..all.len() - 1);
    }
    all
}

/// Where the kernel command line is edited, by the distribution family
/// the image's generator stands for (update-grub is Debian's alone).
fn where_cmdline(ctx: &Ctx<'_>) -> &'static str {
    match ctx.generator {
        Generator::InitramfsTools => {
            "GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub; or /etc/kernel/cmdline"
        }
        Generator::Dracut => {
            "grubby --update-kernel=ALL --args=… (Fedora, BLS entries), or GRUB_CMDLINE_LINUX in \
             /etc/default/grub then grub2-mkconfig -o /boot/grub2/grub.cfg; or /etc/kernel/cmdline"
        }
        Generator::Mkinitcpio => {
            "GRUB_CMDLINE_LINUX in /etc/default/grub, then grub-mkconfig -o /boot/grub/grub.cfg; \
             or the options line of /boot/loader/entries/*.conf"
        }
        Generator::Unknown => {
            "GRUB_CMDLINE_LINUX in /etc/default/grub, then regenerate grub.cfg (update-grub, \
             grub-mkconfig or grub2-mkconfig); or the boot entry's options line"
        }
    }
}

fn cmdline_fix(ctx: &Ctx<'_>) -> String {
    format!(
        "add ip=dhcp, or ip=ADDRESS::GATEWAY:NETMASK::INTERFACE:off, to the kernel command line \
         ({})",
        where_cmdline(ctx)
    )
}

pub fn network_config(ctx: &Ctx<'_>) -> Check {
    const ID: &str = "network-config";
    let ips = ip_params(ctx);
    // initramfs-tools and mkinitcpio busybox images: klibc ipconfig and
    // the hook's ip= parser are IPv4 only; IPv6, VLANs and bonds come from
    // portcullis.* parameters, read by the image's /usr/lib/portcullis/net.sh.
    let busybox = !ctx.systemd
        && matches!(
            ctx.generator,
            Generator::InitramfsTools | Generator::Mkinitcpio
        );
    let ip6_fix = || {
        format!(
            "write ip=off portcullis.ip6=ADDRESS/PREFIX,GATEWAY,DEVICE instead (docs/install/network.md) \
             ({})",
            where_cmdline(ctx)
        )
    };
    if busybox {
        let v6 = ips.iter().find(|(_, p)| {
            matches!(
                p,
                IpParam::Static {
                    client: IpAddr::V6(_),
                    ..
                }
            )
        });
        if let Some((v, _)) = v6 {
            return fail(
                ID,
                format!(
                    "ip={}: this initramfs sets only IPv4 addresses from ip=",
                    clip_plain(v)
                ),
                ip6_fix(),
            );
        }
    }
    if let Some((v, _)) = ips.iter().find(|(_, p)| *p != IpParam::Off) {
        return pass(ID, format!("ip={} on the command line", clip_plain(v)));
    }
    let ip6 = ctx
        .words()
        .filter_map(|w| w.strip_prefix("portcullis.ip6="))
        .last();
    if let (true, Some(v)) = (busybox, ip6) {
        if ctx.image.file("usr/lib/portcullis/net.sh").is_some() {
            return pass(
                ID,
                format!("portcullis.ip6={} on the command line", clip_plain(v)),
            );
        }
        return fail(
            ID,
            format!(
                "portcullis.ip6={}: the image has no /usr/lib/portcullis/net.sh to read it",
                clip_plain(v)
            ),
            format!(
                "install the current portcullis hooks (initramfs/install.sh), then run {}",
                ctx.rebuild()
            ),
        );
    }
    if let Some((v, _)) = ips.first() {
        return fail(
            ID,
            format!(
                "ip={} on the command line: the initramfs brings up no network",
                clip_plain(v)
            ),
            cmdline_fix(ctx).replacen("add", "replace it with", 1),
        );
    }
    if ctx.words().any(|w| w == "rd.neednet=1") && ctx.generator == Generator::Dracut {
        return pass(ID, "rd.neednet=1: dracut brings up the network (DHCP)");
    }
    let networkd = ctx
        .image
        .paths()
        .filter(|p| {
            (p.starts_with("etc/systemd/network/") || p.starts_with("usr/lib/systemd/network/"))
                && p.ends_with(".network")
        })
        .count();
    // The files configure nothing unless networkd itself is in the image.
    let networkd_binary = ctx
        .image
        .resolve("usr/lib/systemd/systemd-networkd")
        .is_some();
    if networkd > 0 && ctx.systemd && networkd_binary {
        return pass(
            ID,
            format!("{networkd} systemd-networkd .network file(s) in the image"),
        );
    }
    if ctx.generator == Generator::InitramfsTools {
        // conf.d is read after initramfs.conf, so its IP= wins.
        let conf_ip = ctx
            .image
            .entries()
            .filter(|(p, _)| *p == "conf/initramfs.conf")
            .chain(
                ctx.image
                    .entries()
                    .filter(|(p, _)| p.starts_with("conf/conf.d/")),
            )
            .flat_map(|(_, e)| {
                String::from_utf8_lossy(&e.data)
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("IP="))
                    .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .last();
        return match conf_ip {
            Some(v) if parse_ip(&v) == IpParam::Off => fail(
                ID,
                format!("IP={} in the image's initramfs.conf: no network", clip_plain(&v)),
                format!("remove IP= from /etc/initramfs-tools/initramfs.conf, then run {}", ctx.rebuild()),
            ),
            Some(v) => pass(ID, format!("IP={} in the image's initramfs.conf", clip_plain(&v))),
            None => warn(
                ID,
                "no ip= on the command line: the initramfs tries DHCP on every interface, and has no network where there is no DHCP server",
                cmdline_fix(ctx),
            ),
        };
    }
    fail(
        ID,
        "no ip=, rd.neednet=1 or networkd file: the initramfs brings up no network",
        cmdline_fix(ctx),
    )
}

/// The interface carrying the default route, and its gateway.
fn route(ctx: &Ctx<'_>) -> Option<crate::preflight::system::Route> {
    ctx.system.default_routes().into_iter().next()
}

pub fn nic_driver(ctx: &Ctx<'_>) -> Check {
    const ID: &str = "nic-driver";
    let Some(r) = route(ctx) else {
        return warn(
            ID,
            "this machine has no default route: cannot tell which NIC the initramfs needs",
            "run preflight with the network up as it is in production",
        );
    };
    let iface = r.interface.clone();
    let drivers = ctx.system.nic_drivers(&r.interface);
    if drivers.iter().all(|d| *d == NicDriver::Virtual) {
        return skip(
            ID,
            format!("{iface} (default route) is a virtual interface with no device under it"),
        );
    }
    // Every driver under the route (a bond's slaves, a virtio device's
    // PCI function) must load; the first missing one fails.
    let mut found = Vec::new();
    for driver in drivers {
        match one_driver(ctx, &iface, driver) {
            Ok(Some(said)) => found.push(said),
            Ok(None) => {}
            Err(check) => return check,
        }
    }
    pass(ID, found.join("; "))
}

/// `Ok(what was found)` for a driver that will be there at boot, else the
/// check that says why not.
fn one_driver(ctx: &Ctx<'_>, iface: &str, driver: NicDriver) -> Result<Option<String>, Check> {
    const ID: &str = "nic-driver";
    let module = match driver {
        NicDriver::Virtual => return Ok(None),
        NicDriver::Unknown => {
            return Err(warn(
                ID,
                format!("cannot read the driver of {iface} (default route)"),
                "run preflight as root on the server the image boots",
            ))
        }
        NicDriver::BuiltIn(d) => return built_in(ctx, iface, &d),
        NicDriver::Module(m) => m,
    };
    let m = module.clone();
    match kmod::find(ctx, &module) {
        None => Err(warn(
            ID,
            format!("the image's kernel release is not known: cannot look for {m} ({iface})"),
            "name it with --kernel REL",
        )),
        Some(Found::Image) => Ok(Some(format!("{iface}: module {m} in the image"))),
        Some(Found::BuiltIn) => Ok(Some(format!("{iface}: {m} is built into the kernel"))),
        Some(Found::Missing) => {
            let add = match ctx.generator {
                Generator::InitramfsTools => {
                    format!("add {module} to /etc/initramfs-tools/modules")
                }
                Generator::Dracut => {
                    format!("add add_drivers+=\" {module} \" to /etc/dracut.conf.d/portcullis.conf")
                }
                Generator::Mkinitcpio => format!("add {module} to MODULES in /etc/mkinitcpio.conf"),
                Generator::Unknown => format!("add the {module} module to the image"),
            };
            Err(fail(
                ID,
                format!(
                    "{iface} carries the default route, but its driver {m} is not in the image for {}",
                    ctx.kernel.as_deref().unwrap_or_default()
                ),
                format!("{add}, then run {}", ctx.rebuild()),
            ))
        }
    }
}

/// sysfs says `driver` is built into the RUNNING kernel; that holds for
/// the image only when it is for the same kernel. Otherwise look for it
/// as a module of the image's kernel (driver and module names agree for
/// NIC drivers, up to `-`/`_`).
fn built_in(ctx: &Ctx<'_>, iface: &str, driver: &str) -> Result<Option<String>, Check> {
    const ID: &str = "nic-driver";
    let running = ctx.system.running_kernel();
    if running.is_none() || running == ctx.kernel || ctx.kernel.is_none() {
        return Ok(Some(format!(
            "{iface}: driver {driver} is built into the kernel"
        )));
    }
    let module = driver.replace('-', "_");
    match kmod::find(ctx, &module) {
        Some(Found::Image) => Ok(Some(format!("{iface}: module {module} in the image"))),
        Some(Found::BuiltIn) => Ok(Some(format!(
            "{iface}: {module} is built into the kernel"
        ))),
        _ => Err(warn(
            ID,
            format!(
                "{iface}: driver {driver} is built into the running kernel {}, but the image is for {}, which has no module {module} in the image",
                running.unwrap_or_default(),
                ctx.kernel.as_deref().unwrap_or_default()
            ),
            format!(
                "boot {} and run preflight again, or add {module} to the image and run {}",
                ctx.kernel.as_deref().unwrap_or_default(),
                ctx.rebuild()
            ),
        )),
    }
}

pub fn static_ip(ctx: &Ctx<'_>) -> Check {
    const ID: &str = "static-ip";
    let Some((
        raw,
        IpParam::Static {
            client,
            gateway,
            prefix,
            device,
        },
    )) = ip_params(ctx)
        .into_iter()
        .find(|(_, p)| matches!(p, IpParam::Static { .. }))
    else {
        return skip(ID, "no static ip= to compare");
    };
    let raw = clip_plain(&raw);
    let routes = ctx.system.default_routes();
    let r = routes
        .iter()
        .find(|r| r.gateway.is_none_or(|g| g.is_ipv4() == client.is_ipv4()))
        .or(routes.first());
    let iface = device
        .clone()
        .or_else(|| r.map(|r| r.interface.clone()))
        .unwrap_or_default();
    let fix = format!(
        "correct ip= on the kernel command line ({})",
        where_cmdline(ctx)
    );
    let fix = fix.as_str();
    if let (Some(d), Some(r)) = (&device, r) {
        if *d != r.interface {
            return warn(
                ID,
                format!(
                    "ip={raw} names {d}, but the default route is on {} now",
                    r.interface
                ),
                fix,
            );
        }
    }
    let addrs = ctx.system.addresses(&iface);
    if addrs.is_empty() {
        return skip(
            ID,
            format!("cannot read the current addresses of {iface} to compare"),
        );
    }
    let now = addrs
        .iter()
        .map(|a| format!("{}/{}", a.ip, a.prefix))
        .collect::<Vec<_>>()
        .join(", ");
    let Some(cur) = addrs.iter().find(|a| a.ip == client) else {
        return warn(
            ID,
            format!("ip= sets {client}, but {iface} has {now} now"),
            fix,
        );
    };
    if let Some(p) = prefix {
        if p != cur.prefix {
            return warn(
                ID,
                format!(
                    "ip= sets {client}/{p}, but {iface} has {client}/{} now",
                    cur.prefix
                ),
                fix,
            );
        }
    }
    let route_gw = r.and_then(|r| r.gateway);
    if gateway != route_gw && route_gw.is_some_and(|g| g.is_ipv4() == client.is_ipv4()) {
        return warn(
            ID,
            format!(
                "ip= sets gateway {}, but the default route goes via {} now",
                gateway.map_or("(none)".into(), |g| g.to_string()),
                route_gw.map_or("(none)".into(), |g| g.to_string())
            ),
            fix,
        );
    }
    pass(
        ID,
        format!(
            "ip= agrees with {iface}: {client}/{}{}",
            cur.prefix,
            gateway.map_or(String::new(), |g| format!(" via {g}"))
        ),
    )
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::super::fixture::{check, exe, file};
    use super::*;
    use crate::preflight::image::Image;
    use crate::preflight::report::Status;
    use crate::preflight::system::fake::FakeSystem;
    use crate::preflight::system::{Address, Route};

    const STATIC: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::ens3:off";

    #[test]
    fn parses_the_ip_forms() {
        assert_eq!(parse_ip("dhcp"), IpParam::Auto);
        assert_eq!(parse_ip("off"), IpParam::Off);
        assert_eq!(parse_ip("ens3:dhcp"), IpParam::Auto);
        assert_eq!(parse_ip("ens3:off"), IpParam::Off);
        assert_eq!(parse_ip(":::::ens3:off"), IpParam::Off);
        assert_eq!(parse_ip(":::::ens3:dhcp"), IpParam::Auto);
        assert_eq!(
            parse_ip("10.0.2.15::10.0.2.2:255.255.255.0::ens3:off"),
            IpParam::Static {
                client: "10.0.2.15".parse().unwrap(),
                gateway: Some("10.0.2.2".parse().unwrap()),
                prefix: Some(24),
                device: Some("ens3".into()),
            }
        );
        assert_eq!(
            parse_ip("[2001:db8::2]::[2001:db8::1]:64::eth0:none"),
            IpParam::Static {
                client: "2001:db8::2".parse().unwrap(),
                gateway: Some("2001:db8::1".parse().unwrap()),
                prefix: Some(64),
                device: Some("eth0".into()),
            }
        );
        assert_eq!(parse_ip("10.0.2.15:::::eth0:dhcp"), IpParam::Auto);
        assert_eq!(prefix("255.255.0.255"), None);
    }

    fn sys() -> FakeSystem {
        let mut s = FakeSystem::default();
        s.routes = vec![Route {
            interface: "ens3".into(),
            gateway: Some("10.0.2.2".parse().unwrap()),
        }];
        s.addresses.insert(
            "ens3".into(),
            vec![Address {
                ip: "10.0.2.15".parse().unwrap(),
                prefix: 24,
            }],
        );
        s.drivers
            .insert("ens3".into(), NicDriver::Module("virtio_net".into()));
        s
    }

    fn tools_image() -> Image {
        let mut img = Image::default();
        file(&mut img, "scripts/functions", b"");
        file(&mut img, "conf/initramfs.conf", b"MODULES=most\n");
        img
    }

    #[test]
    fn network_config_from_the_command_line_or_the_image() {
        let s = sys();
        let img = tools_image();
        assert_eq!(
            check("network-config", &img, &s, STATIC).status,
            Status::Pass
        );
        let c = check("network-config", &img, &s, "ro quiet");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("ip=dhcp") && fix.contains("update-grub"),
            "{fix}"
        );
        // update-grub is Debian's: Arch (mkinitcpio) and Fedora (dracut)
        // are told their own tools.
        let mut arch = Image::default();
        file(&mut arch, "init_functions", b"");
        let fix = check("network-config", &arch, &s, "ip=off").fix.unwrap();
        assert!(
            fix.contains("grub-mkconfig -o /boot/grub/grub.cfg"),
            "{fix}"
        );
        assert!(!fix.contains("update-grub"), "{fix}");
        let mut fedora = Image::default();
        file(&mut fedora, "usr/lib/dracut/modules.txt", b"");
        let fix = check("network-config", &fedora, &s, "ip=off").fix.unwrap();
        assert!(
            fix.contains("grubby") && !fix.contains("update-grub"),
            "{fix}"
        );
        let c = check("network-config", &img, &s, "ip=off");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        // The last ip= wins outside dracut.
        let c = check("network-config", &img, &s, "ro ip=dhcp ip=off");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.starts_with("ip=off"), "{c:?}");
        let c = check("network-config", &img, &s, "ro ip=off ip=dhcp");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        let mut img = tools_image();
        file(&mut img, "conf/conf.d/net", b"IP=dhcp\n");
        assert_eq!(check("network-config", &img, &s, "").status, Status::Pass);
        // dracut: our module's etc/cmdline.d counts.
        let mut img = Image::default();
        file(&mut img, "usr/lib/dracut/modules.txt", b"");
        // dracut takes one ip= per interface: any one that is on counts.
        let c = check("network-config", &img, &s, "ip=ens3:dhcp ip=ens4:off");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(check("network-config", &img, &s, "").status, Status::Fail);
        file(
            &mut img,
            "etc/cmdline.d/90portcullis.conf",
            b"rd.neednet=1\n",
        );
        assert_eq!(check("network-config", &img, &s, "").status, Status::Pass);
        // systemd initrd with networkd files.
        let mut img = Image::default();
        exe(&mut img, "usr/lib/systemd/systemd", b"");
        assert_eq!(check("network-config", &img, &s, "").status, Status::Fail);
        file(
            &mut img,
            "etc/systemd/network/20-wired.network",
            b"[Match]\n",
        );
        // .network files without systemd-networkd configure nothing.
        assert_eq!(check("network-config", &img, &s, "").status, Status::Fail);
        exe(&mut img, "usr/lib/systemd/systemd-networkd", b"");
        assert_eq!(check("network-config", &img, &s, "").status, Status::Pass);
    }

    #[test]
    fn nic_driver_in_the_image_built_in_or_missing() {
        let mut s = sys();
        let mut img = tools_image();
        let c = check("nic-driver", &img, &s, "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(
            c.fix.unwrap(),
            "add virtio_net to /etc/initramfs-tools/modules, then run update-initramfs -u -k 6.1.0-test"
        );
        file(
            &mut img,
            "usr/lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko.zst",
            b"",
        );
        assert_eq!(check("nic-driver", &img, &s, "").status, Status::Pass);
        s.builtin.insert(
            "6.1.0-test".into(),
            "kernel/drivers/net/virtio_net.ko\n".into(),
        );
        let c = check("nic-driver", &tools_image(), &s, "");
        assert_eq!(c.status, Status::Pass);
        assert!(c.summary.contains("built into"));
        s.drivers.insert("ens3".into(), NicDriver::Virtual);
        assert_eq!(check("nic-driver", &img, &s, "").status, Status::Skip);
        s.routes.clear();
        assert_eq!(check("nic-driver", &img, &s, "").status, Status::Warn);
    }

    /// "Built in" from sysfs is about the running kernel: for an image of
    /// another kernel the module must be found for that kernel.
    #[test]
    fn built_in_on_the_running_kernel_only_counts_for_that_kernel() {
        let mut s = sys();
        s.drivers
            .insert("ens3".into(), NicDriver::BuiltIn("virtio_net".into()));
        s.running = Some("6.1.0-test".into());
        assert_eq!(
            check("nic-driver", &tools_image(), &s, "").status,
            Status::Pass
        );
        s.running = Some("6.12.0-host".into());
        let c = check("nic-driver", &tools_image(), &s, "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("running kernel 6.12.0-host"), "{c:?}");
        let mut img = tools_image();
        file(
            &mut img,
            "usr/lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko.zst",
            b"",
        );
        assert_eq!(check("nic-driver", &img, &s, "").status, Status::Pass);
    }

    #[test]
    fn nic_driver_routes_gone_warn() {
        let mut s = sys();
        let img = tools_image();
        s.routes.clear();
        assert_eq!(check("nic-driver", &img, &s, "").status, Status::Warn);
    }

    #[test]
    fn ipv6_needs_portcullis_ip6_outside_dracut() {
        let s = sys();
        let v6 = "ip=[2001:db8::10]::[fe80::1]:64::ens3:none";
        let c = check("network-config", &tools_image(), &s, v6);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.as_ref().unwrap().contains("portcullis.ip6="), "{c:?}");
        let mut arch = Image::default();
        file(&mut arch, "init_functions", b"");
        assert_eq!(check("network-config", &arch, &s, v6).status, Status::Fail);
        // dracut reads bracketed IPv6 in ip= itself.
        let mut dracut = Image::default();
        file(&mut dracut, "usr/lib/dracut/modules.txt", b"");
        assert_eq!(
            check("network-config", &dracut, &s, v6).status,
            Status::Pass
        );
        // portcullis.ip6= with ip=off: an IPv6-only image, if net.sh is in it.
        let line = "ip=off portcullis.ip6=2001:db8::10/64,fe80::1,ens3";
        let mut img = tools_image();
        let c = check("network-config", &img, &s, line);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("net.sh"), "{c:?}");
        file(&mut img, "usr/lib/portcullis/net.sh", b"");
        let c = check("network-config", &img, &s, line);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        file(&mut arch, "usr/lib/portcullis/net.sh", b"");
        let c = check(
            "network-config",
            &arch,
            &s,
            "ip=off portcullis.ip6=auto,,eth0",
        );
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }

    #[test]
    fn nic_driver_checks_every_device_under_the_route() {
        let mut s = sys();
        // A bond over two NICs, one driver in the image, one not.
        s.routes[0].interface = "bond0".into();
        s.drivers.insert("bond0".into(), NicDriver::Virtual);
        s.stacks.insert(
            "bond0".into(),
            vec![
                NicDriver::Module("virtio_net".into()),
                NicDriver::Module("igb".into()),
            ],
        );
        let mut img = tools_image();
        file(
            &mut img,
            "usr/lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko",
            b"",
        );
        let c = check("nic-driver", &img, &s, "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("igb"), "{c:?}");
        // The parent bus's module counts too (virtio_net needs virtio_pci).
        s.stacks.insert(
            "bond0".into(),
            vec![
                NicDriver::Module("virtio_net".into()),
                NicDriver::Module("virtio_pci".into()),
            ],
        );
        let c = check("nic-driver", &img, &s, "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.unwrap().starts_with("add virtio_pci"));
        file(
            &mut img,
            "usr/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_pci.ko",
            b"",
        );
        let c = check("nic-driver", &img, &s, "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }

    #[test]
    fn static_ip_agrees_or_warns() {
        let s = sys();
        let img = Image::default();
        let c = check("static-ip", &img, &s, STATIC);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(c.summary, "ip= agrees with ens3: 10.0.2.15/24 via 10.0.2.2");
        assert_eq!(check("static-ip", &img, &s, "ip=dhcp").status, Status::Skip);
        for (line, says) in [
            (
                "ip=10.0.2.99::10.0.2.2:255.255.255.0::ens3:off",
                "ip= sets 10.0.2.99, but ens3 has 10.0.2.15/24 now",
            ),
            (
                "ip=10.0.2.15::10.0.2.1:255.255.255.0::ens3:off",
                "ip= sets gateway 10.0.2.1, but the default route goes via 10.0.2.2 now",
            ),
            (
                "ip=10.0.2.15::10.0.2.2:255.255.0.0::ens3:off",
                "ip= sets 10.0.2.15/16, but ens3 has 10.0.2.15/24 now",
            ),
            (
                "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off",
                "names eth0, but the default route is on ens3 now",
            ),
        ] {
            let c = check("static-ip", &img, &s, line);
            assert_eq!(c.status, Status::Warn, "{line}: {c:?}");
            assert!(c.summary.contains(says), "{line}: {}", c.summary);
        }
    }
}
