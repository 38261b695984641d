//! `portcullis`: the admin's CLI. Parses arguments (`portcullis::cli`, a
//! leaf), turns them into the library's plain settings, calls one library
//! entry point and exits with its code. Nothing else happens here.

use clap::Parser;
use portcullis::cli::rescue::{self as rargs, RescueCommand};
use portcullis::cli::{
    self, ClientCli, ClientCommand, ConnArgs, KnownHostsCommand, LookupArgs, PassArgs,
};
use portcullis::client::passphrase::Source;
use portcullis::client::settings::Connection;
use portcullis::client::{known_hosts, pins, ClientError, Target};
use portcullis::fleet::cmd::{StatusSettings, UnlockSettings, WatchSettings};
use portcullis::fleet::resolve::Lookup;
use portcullis::protocol::exit;
use portcullis::rescue::cli::{Action, Request};
use portcullis::rescue::flows::KexecOptions;
use portcullis::rescue::handover::Flavour;
use portcullis::rescue::kexec::LoadMethod;

fn main() -> std::process::ExitCode {
    let cli = match ClientCli::try_parse() {
        Ok(cli) => cli,
        // clap exits 2 on usage errors, which is our "wrong passphrase";
        // usage errors are plain errors (1) here.
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { exit::ERROR } else { 0 });
        }
    };
    portcullis::logging::init(false, false);
    std::process::ExitCode::from(run(cli))
}

fn connection(c: &ConnArgs, via: Option<&cli::ViaArgs>) -> Connection {
    Connection {
        fingerprint: c.fingerprint.clone(),
        known_hosts: c.known_hosts.clone(),
        accept_new: c.accept_new,
        identity: c.identity.clone(),
        agent: !c.no_agent,
        user: c.user.clone(),
        wait: c.wait,
        timeout: c.timeout,
        json: c.json,
        via: via.and_then(|v| v.via.clone()),
    }
}

fn lookup(l: &LookupArgs) -> Lookup {
    Lookup {
        inventory: l.inventory.clone(),
        ssh_config: l.ssh_config.clone(),
        default_inventory: true,
    }
}

/// The command line's passphrase source; `None` when none was given.
fn source(p: &PassArgs) -> Option<Source> {
    match (
        &p.passphrase_command,
        &p.passphrase_file,
        p.passphrase_stdin,
    ) {
        (Some(c), _, _) => Some(Source::Command(c.clone())),
        (None, Some(f), _) => Some(Source::File(f.clone())),
        (None, None, true) => Some(Source::Stdin),
        (None, None, false) => None,
    }
}

fn flavour(f: rargs::InitrdFlavour) -> Flavour {
    match f {
        rargs::InitrdFlavour::InitramfsTools => Flavour::InitramfsTools,
        rargs::InitrdFlavour::Systemd => Flavour::Systemd,
        rargs::InitrdFlavour::MkinitcpioEncrypt => Flavour::MkinitcpioEncrypt,
        rargs::InitrdFlavour::None => Flavour::None,
    }
}

fn load_method(m: rargs::LoadMethod) -> LoadMethod {
    match m {
        rargs::LoadMethod::Auto => LoadMethod::Auto,
        rargs::LoadMethod::File => LoadMethod::File,
        rargs::LoadMethod::Classic => LoadMethod::Classic,
    }
}

fn rescue(args: rargs::RescueArgs) -> Request {
    let none = PassArgs {
        passphrase_stdin: false,
        passphrase_command: None,
        passphrase_file: None,
    };
    let (common, pass, action) = match args.command {
        RescueCommand::Inspect { common } => (common, None, Action::Inspect),
        RescueCommand::Unlock {
            common,
            pass,
            devices,
        } => (common, Some(pass), Action::Unlock { devices }),
        RescueCommand::Mount { common, rw, root } => (
            common,
            None,
            Action::Mount {
                rw,
                root_device: root.root_device,
                subvol: root.subvol,
            },
        ),
        RescueCommand::Check {
            common,
            repair,
            root,
        } => (
            common,
            None,
            Action::Check {
                repair,
                root_device: root.root_device,
                subvol: root.subvol,
            },
        ),
        RescueCommand::Chroot { common, command } => (common, None, Action::Chroot { command }),
        RescueCommand::Close { common, keep_open } => (common, None, Action::Close { keep_open }),
        RescueCommand::Kexec(k) => (
            k.common,
            Some(k.pass),
            Action::Kexec(KexecOptions {
                entry: k.entry,
                kernel: k.kernel,
                initrd: k.initrd,
                cmdline: k.cmdline,
                append: k.append,
                flavour: k.initrd_flavour.map(flavour),
                no_handover: k.no_handover,
                load_method: load_method(k.load_method),
                load_only: k.load_only,
            }),
        ),
    };
    Request {
        host: common.host,
        conn: connection(&common.conn, None),
        mount_dir: common.target,
        dry_run: common.dry_run,
        yes: common.yes,
        verbose: common.verbose,
        source: source(pass.as_ref().unwrap_or(&none)).unwrap_or(Source::Prompt),
        action,
    }
}

fn completions(shell: cli::Shell) -> u8 {
    let shell = match shell {
        cli::Shell::Bash => clap_complete::Shell::Bash,
        cli::Shell::Zsh => clap_complete::Shell::Zsh,
        cli::Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut cli::command(),
        "portcullis",
        &mut std::io::stdout(),
    );
    exit::UNLOCKED
}

/// The listener `known-hosts pin|forget` files a pin under, named as for
/// `status` (inventory host, ssh_config alias, HOST:PORT…).
fn pin_target(target: &str, l: &LookupArgs) -> anyhow::Result<Target> {
    portcullis::fleet::resolve::resolve_listener(target, &lookup(l))
}

/// `known-hosts list|pin|forget`: the bodies are in [`pins`].
async fn known_hosts(c: KnownHostsCommand) -> u8 {
    let file = match &c {
        KnownHostsCommand::List { file, .. }
        | KnownHostsCommand::Pin { file, .. }
        | KnownHostsCommand::Forget { file, .. } => file.known_hosts.clone(),
    };
    let Some(path) = file.or_else(known_hosts::default_path) else {
        eprintln!("error: HOME is not set: pass --known-hosts FILE");
        return exit::ERROR;
    };
    let r = match c {
        KnownHostsCommand::List { json, .. } => pins::list(&path, json)
            .map(|t| t.trim_end().to_string())
            .map_err(ClientError::Other),
        KnownHostsCommand::Forget { target, lookup, .. } => pin_target(&target, &lookup)
            .and_then(|t| pins::forget(&path, &t))
            .map_err(ClientError::Other),
        KnownHostsCommand::Pin {
            target,
            fingerprint,
            key,
            add,
            timeout,
            lookup,
            ..
        } => match pin_target(&target, &lookup) {
            Err(e) => Err(ClientError::Other(e)),
            Ok(t) => {
                pins::pin(&pins::PinRequest {
                    target: t,
                    known_hosts: path,
                    fingerprint,
                    key_file: key,
                    keep: if add {
                        pins::Keep::Add
                    } else {
                        pins::Keep::Replace
                    },
                    timeout,
                })
                .await
            }
        },
    };
    match r {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            exit::UNLOCKED
        }
        Err(e) => {
            eprintln!("error: {}", portcullis::text::line(&e.to_string()));
            e.exit_code()
        }
    }
}

fn run(cli: ClientCli) -> u8 {
    // One worker per CPU: a fleet run's key exchanges and signature checks
    // then use every core (500 simulated hosts: 3.55 s median against 3.78 s
    // on one thread, 2 loaded CPUs; benches/fleet.sh).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return exit::ERROR;
        }
    };
    rt.block_on(async move {
        match cli.command {
            ClientCommand::Unlock {
                targets,
                conn,
                via,
                pass,
                lookup: l,
                fleet,
            } => {
                portcullis::fleet::cmd::unlock(&UnlockSettings {
                    targets,
                    lookup: lookup(&l),
                    conn: connection(&conn, Some(&via)),
                    source: source(&pass),
                    parallel: fleet.parallel as usize,
                    up_timeout: (!fleet.no_wait_up).then_some(fleet.up_timeout),
                })
                .await
            }
            ClientCommand::Status {
                targets,
                conn,
                via,
                lookup: l,
            } => {
                portcullis::fleet::cmd::status(&StatusSettings {
                    targets,
                    lookup: lookup(&l),
                    conn: connection(&conn, Some(&via)),
                })
                .await
            }
            ClientCommand::Watch(w) => {
                portcullis::fleet::cmd::watch(&WatchSettings {
                    targets: w.targets,
                    inventory: w.inventory,
                    interval: w.interval,
                    max_wrong: w.max_wrong,
                    backoff: w.backoff,
                    approve_timeout: w.approve_timeout,
                    up_timeout: (!w.no_wait_up).then_some(w.up_timeout),
                    parallel: w.parallel as usize,
                    timeout: w.timeout,
                    agent: !w.no_agent,
                })
                .await
            }
            ClientCommand::Preflight(p) => {
                portcullis::fleet::preflight::preflight(portcullis::fleet::preflight::Settings {
                    targets: p.targets,
                    lookup: lookup(&p.lookup),
                    login: p.login,
                    identity: p.identity,
                    agent: !p.no_agent,
                    known_hosts: p.known_hosts,
                    all_kernels: p.all_kernels,
                    image: p.image,
                    ssh_options: p.ssh_options,
                    timeout: p.timeout,
                    parallel: p.parallel as usize,
                    json: p.json,
                })
                .await
            }
            ClientCommand::Rescue(r) => portcullis::rescue::cli::run(rescue(r)).await,
            ClientCommand::KnownHosts(c) => known_hosts(c).await,
            ClientCommand::Completions { shell } => completions(shell),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ClientCli {
        ClientCli::try_parse_from(args).unwrap()
    }

    #[test]
    fn rescue_arguments_become_a_plain_request() {
        let cli = parse(&[
            "portcullis",
            "rescue",
            "kexec",
            "ops@rescue:2222",
            "--passphrase-file",
            "/root/pw",
            "--initrd-flavour",
            "systemd",
            "--wait",
            "90s",
            "--json",
        ]);
        let ClientCommand::Rescue(r) = cli.command else {
            panic!("not rescue")
        };
        let req = rescue(r);
        assert_eq!(req.host, "ops@rescue:2222");
        assert_eq!(req.source, Source::File("/root/pw".into()));
        assert!(req.conn.json);
        assert_eq!(req.conn.wait, Some(std::time::Duration::from_secs(90)));
        let Action::Kexec(k) = req.action else {
            panic!("not kexec")
        };
        assert_eq!(k.flavour, Some(Flavour::Systemd));
        assert_eq!(k.load_method, LoadMethod::Auto);
    }

    #[test]
    fn no_passphrase_option_means_each_hosts_own() {
        let cli = parse(&["portcullis", "unlock", "web"]);
        let ClientCommand::Unlock { pass, .. } = cli.command else {
            panic!("not unlock")
        };
        assert_eq!(source(&pass), None);
        let cli = parse(&["portcullis", "unlock", "web", "--passphrase-stdin"]);
        let ClientCommand::Unlock { pass, .. } = cli.command else {
            panic!("not unlock")
        };
        assert_eq!(source(&pass), Some(Source::Stdin));
    }
}
