//! The initramfs network beyond `ip=` (`initramfs/common/portcullis-net.sh`,
//! `/usr/lib/portcullis/net.sh` in the images), run by a real POSIX shell
//! (dash here; busybox ash at boot) against real interfaces: a veth pair in
//! private mount and network namespaces (root needed; skipped with a note
//! otherwise). IPv6 is configured and undone for real; bonds and VLANs only
//! as far as this host's kernel goes (it may lack bonding and 8021q: then
//! the parsing is proven by what the error names). The QEMU boots of
//! tests/distro prove them end to end.

use std::process::{Command, Output};

const NET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/initramfs/common/portcullis-net.sh"
);
const LIB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/initramfs/common/portcullis-lib.sh"
);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `script` as root in fresh mount and network namespaces, with both
/// libraries sourced, the kernel command line `cmdline` in
/// PORTCULLIS_CMDLINE, and a veth pair: eth7 (the guest's side, down) and
/// peer7 (the router's, up, with fe80::1). `None` where that is impossible.
fn run(cmdline: &str, script: &str) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["-m", "-n", "true"])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let o = Command::new("unshare")
        .args(["-m", "-n", "/bin/sh", "-c"])
        .arg(format!(
            "mount -t tmpfs tmpfs /run || exit 99\n\
             mount -t sysfs sysfs /sys || exit 99\n\
             ip link set lo up\n\
             ip link add eth7 type veth peer name peer7 || exit 98\n\
             ip link set peer7 up && ip address add fe80::1/64 dev peer7 nodad || exit 98\n\
             printf '%s\\n' \"$CMDLINE\" >/run/cmdline\n\
             PORTCULLIS_CMDLINE=/run/cmdline PORTCULLIS_NET_WAIT=5\n\
             . \"$LIB\"; . \"$NET\"\n\
             portcullis_net_params\n{script}"
        ))
        .env("LIB", LIB)
        .env("NET", NET)
        .env("CMDLINE", cmdline)
        .output()
        .unwrap();
    if o.status.code() == Some(98) {
        eprintln!("skipped: cannot create a veth pair here");
        return None;
    }
    Some(o)
}

macro_rules! run_or_skip {
    ($cmdline:expr, $script:expr) => {
        match run($cmdline, $script) {
            Some(o) => o,
            None => {
                eprintln!("skipped: needs root for unshare -m -n");
                return;
            }
        }
    };
}

#[test]
fn static_ipv6_with_a_link_local_gateway_and_its_undoing() {
    let script = "portcullis_net_ip6 || echo 'ip6 failed'\n\
                  echo \"addr: $(portcullis_net_global6 eth7)\"\n\
                  echo \"route: $(ip -6 route show default dev eth7)\"\n\
                  echo \"accept_ra: $(cat /proc/sys/net/ipv6/conf/eth7/accept_ra)\"\n\
                  portcullis_net_down || echo 'down failed'\n\
                  ip -6 address show dev eth7 | grep -q inet6 && echo 'address left'\n\
                  ip -6 route show dev eth7 | grep -q . && echo 'route left'\n\
                  ip -o link show dev eth7 | grep -q '[<,]UP[,>]' && echo 'link up'\n\
                  [ -e /run/portcullis/net-up ] && echo 'state left'\n\
                  echo done";
    let o = run_or_skip!(
        "quiet portcullis.ip6=2001:db8:5c::15/64,fe80::1,eth7 ip=off",
        script
    );
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert!(out.starts_with("addr: 2001:db8:5c::15/64\n"), "{out}{err}");
    assert!(
        out.contains("route: default via fe80::1 "),
        "no default route via fe80::1: {out}{err}"
    );
    // Static means exactly what the admin wrote: no router advertisements.
    assert!(out.contains("accept_ra: 0\n"), "{out}");
    assert!(out.ends_with("accept_ra: 0\ndone\n"), "{out}{err}");
    assert!(
        err.contains("portcullis: IPv6: eth7 2001:db8:5c::15/64 via fe80::1"),
        "{err}"
    );
}

#[test]
fn the_device_defaults_to_the_one_ip_configured() {
    let script = "portcullis_net_ip6 eth7 || echo failed\n\
                  portcullis_net_global6 eth7";
    let o = run_or_skip!("portcullis.ip6=2001:db8::7/128", script);
    assert_eq!(text(&o.stdout), "2001:db8::7/128\n", "{}", text(&o.stderr));
}

#[test]
fn flush_removes_an_ipv6_default_route_via_a_link_local_gateway() {
    // What every generator's cleanup runs (portcullis_flush in lib.sh).
    let script = "ip link set eth7 up\n\
                  ip -6 address add 2001:db8:5c::15/64 dev eth7 nodad\n\
                  ip -6 route add default via fe80::1 dev eth7\n\
                  portcullis_flush eth7 || echo 'flush failed'\n\
                  ip -6 route show dev eth7 | grep -q . && echo 'route left'\n\
                  ip -6 address show dev eth7 | grep -q 'scope global' && echo 'address left'\n\
                  echo done";
    let o = run_or_skip!("", script);
    assert_eq!(text(&o.stdout), "done\n", "{}", text(&o.stderr));
}

#[test]
fn bad_ipv6_parameters_fail_with_one_clear_line_and_change_nothing() {
    for (spec, want) in [
        ("2001:db8::2", "give ADDRESS/PREFIX"),
        ("10.0.0.2/24,10.0.0.1", "give ADDRESS/PREFIX"),
        ("2001:db8::2/129,fe80::1", "the prefix length must be 1-128"),
        (
            "2001:db8::2/64,10.0.0.1",
            "gateway '10.0.0.1' is not an IPv6 address",
        ),
        ("2001:db8::2/64,fe80::1,eth7,x", "too many fields"),
        (
            "2001:db8::2/64,fe80::1,no/such",
            "'no/such' is not an interface name",
        ),
        (
            "2001:db8::2/64,fe80::1,nosuch0",
            "no interface nosuch0 appeared",
        ),
    ] {
        let script = "portcullis_net_ip6 && echo 'accepted'\n\
                      ip -6 address show | grep -q 'scope global' && echo 'address added'\n\
                      echo done";
        let o = run_or_skip!(&format!("portcullis.ip6={spec}"), script);
        let err = text(&o.stderr);
        assert_eq!(text(&o.stdout), "done\n", "{spec}: {err}");
        assert_eq!(err.lines().count(), 1, "{spec}: one line: {err}");
        assert!(
            err.starts_with(&format!("portcullis: portcullis.ip6={spec}: ")) && err.contains(want),
            "{spec}: {err}"
        );
    }
}

#[test]
fn kernel_parameters_are_read_every_one() {
    let script =
        "echo \"ip6=[$PORTCULLIS_IP6] bonds=[$PORTCULLIS_BONDS] vlans=[$PORTCULLIS_VLANS]\"\n\
                  portcullis_net_wanted && echo wanted";
    let o = run_or_skip!(
        "ro portcullis.vlan=eth0.100:eth0 portcullis.ip6=auto portcullis.bond=bond0:eth0,eth1 \
         portcullis.vlan=vlan7:bond0 portcullis.ip6=2001:db8::2/64 x=*",
        script
    );
    assert_eq!(
        text(&o.stdout),
        "ip6=[2001:db8::2/64] bonds=[ bond0:eth0,eth1] vlans=[ eth0.100:eth0 vlan7:bond0]\nwanted\n"
    );
    let o = run_or_skip!("ro ip=dhcp", "portcullis_net_wanted || echo 'not wanted'");
    assert_eq!(text(&o.stdout), "not wanted\n");
}

#[test]
fn bad_vlan_and_bond_parameters_name_what_to_write() {
    for (f, spec, want) in [
        (
            "vlan",
            "eth7.100",
            "no parent interface; write portcullis.vlan=eth0.100:eth0",
        ),
        (
            "vlan",
            "eth7.5000:eth7",
            "no VLAN id 1-4094 in the name 'eth7.5000'",
        ),
        ("vlan", "eth7.0:eth7", "no VLAN id 1-4094"),
        ("vlan", "mgmt:eth7", "no VLAN id 1-4094 in the name 'mgmt'"),
        ("vlan", "eth7.100:nosuch0", "no interface nosuch0 appeared"),
        (
            "vlan",
            "averyveryverylongname.100:eth7",
            "longer than 15 characters",
        ),
        (
            "bond",
            "bond0",
            "no slaves; write portcullis.bond=bond0:eth0,eth1",
        ),
        (
            "bond",
            "bond0:eth7:mode",
            "options are OPTION=VALUE separated by commas",
        ),
        ("bond", "bond0:eth7:Mode=1", "options are OPTION=VALUE"),
        ("bond", "bond0:eth7,a/b", "'a/b' is not an interface name"),
    ] {
        let script = format!(
            "portcullis_net_{f} '{spec}' && echo accepted\n\
             ip -o link show | grep -q '{}' && echo 'interface made'\n\
             echo done",
            spec.split(':').next().unwrap()
        );
        let o = run_or_skip!("", &script);
        let err = text(&o.stderr);
        assert_eq!(text(&o.stdout), "done\n", "{spec}: {err}");
        assert!(
            err.contains(&format!("portcullis: portcullis.{f}={spec}: ")) && err.contains(want),
            "{spec}: {err}"
        );
    }
}

#[test]
fn the_vlan_id_comes_from_the_name() {
    // Made for real where the kernel has 8021q; else the error names the id.
    for (name, id) in [("eth7.0100", "100"), ("vlan42", "42"), ("vlan0007", "7")] {
        let script = format!(
            "if portcullis_net_vlan '{name}:eth7'; then ip -d link show dev '{name}'; fi; echo done"
        );
        let o = run_or_skip!("", &script);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(
            out.contains(&format!("vlan protocol 802.1Q id {id} "))
                || err.contains(&format!("could not create VLAN {id} on eth7")),
            "{name}: {out}{err}"
        );
    }
}

#[test]
fn modules_for_the_bonds_and_vlans_the_machine_boots_with() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::create_dir_all(root.join("etc/default")).unwrap();
    let modules = |root: &std::path::Path| {
        let o = Command::new("/bin/sh")
            .arg("-c")
            .arg(". \"$NET\"; portcullis_net_modules \"$1\"")
            .arg("sh")
            .arg(root)
            .env("NET", NET)
            .output()
            .unwrap();
        text(&o.stdout)
    };
    assert_eq!(modules(root), "");
    std::fs::write(
        root.join("etc/default/grub"),
        "GRUB_CMDLINE_LINUX=\"portcullis.vlan=eth0.100:eth0\"\n",
    )
    .unwrap();
    assert_eq!(modules(root), "8021q\n");
    std::fs::create_dir_all(root.join("etc/kernel")).unwrap();
    std::fs::write(
        root.join("etc/kernel/cmdline"),
        "root=/dev/mapper/root portcullis.bond=bond0:eth0,eth1\n",
    )
    .unwrap();
    assert_eq!(modules(root), "bonding\n8021q\n");
}
