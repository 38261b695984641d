//! The listener's command line, parsed by hand: clap's parser and help
//! renderer cost about 77 KB in every initramfs, for four subcommands and
//! three options. This module is pure (argument list in, [`Parsed`] or a
//! one-line [`UsageError`] out) and never panics, whatever the input.
//!
//! The grammar follows the clap definition kept in the tests below, which
//! is also what a man-page generator would read; the tests feed both
//! parsers the same argument lists and require the same outcome, and the
//! help texts here are clap's own rendering of that definition.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use portcullis::hostkey::KeyType;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

/// What the listener was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Configuration file (`--config`, global).
    pub config: PathBuf,
    /// More log output (`--verbose`, global).
    pub verbose: bool,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Listen and unlock (also when no subcommand is given).
    Run,
    /// Create a host key of `key_type` at `file`; `force` replaces
    /// existing files.
    Keygen {
        file: PathBuf,
        force: bool,
        key_type: KeyType,
    },
    /// Validate the config, looking its paths up under `root`;
    /// `list_files` prints the files an image needs instead of a summary.
    Check { root: PathBuf, list_files: bool },
}

/// The outcome of a successful parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Args),
    /// Print this text on stdout and exit 0.
    Help(&'static str),
    /// Print [`VERSION`] on stdout and exit 0.
    Version,
}

/// A usage mistake: one line, saying what to do next. Exit code 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `--version` output.
pub const VERSION: &str = concat!("portcullisd ", env!("CARGO_PKG_VERSION"), "\n");

/// Subcommand names, in help order (the tests compare them with clap's).
#[cfg(test)]
const SUBCOMMANDS: [&str; 3] = ["run", "keygen", "check"];

const MAIN_HELP: &str = "\
The initramfs listener

Usage: portcullisd [OPTIONS] [COMMAND]

Commands:
  run     Listen and unlock (the default)
  keygen  Create a new host key (mode 0600) and print its fingerprint
  check   Validate the config and the files it names, then exit. Hooks run this
          when building an image so mistakes fail the build, not the boot
  help    Print this message or the help of the given subcommand(s)

Options:
  -c, --config <CONFIG>  Configuration file [default:
                         /etc/portcullis/portcullisd.toml]
  -v, --verbose          More log output
  -h, --help             Print help
  -V, --version          Print version
";

const RUN_HELP: &str = "\
Listen and unlock (the default)

Usage: portcullisd run [OPTIONS]

Options:
  -c, --config <CONFIG>  Configuration file [default:
                         /etc/portcullis/portcullisd.toml]
  -v, --verbose          More log output
  -h, --help             Print help
";

const KEYGEN_HELP: &str = "\
Create a new host key (mode 0600) and print its fingerprint

Usage: portcullisd keygen [OPTIONS] <FILE>

Arguments:
  <FILE>  Where to write the key; FILE.pub gets the public half

Options:
  -c, --config <CONFIG>  Configuration file [default:
                         /etc/portcullis/portcullisd.toml]
      --force            Replace an existing key and public file (clients that
                         pinned the old key will refuse the new one until
                         re-pinned)
      --type <TYPE>      Key type (rsa runs OpenSSH's ssh-keygen); a listener
                         can serve one key of each type at once
                         (docs/rotation.md) [default: ed25519] [possible values:
                         ed25519, ecdsa, rsa]
  -v, --verbose          More log output
  -h, --help             Print help
";

const CHECK_HELP: &str = "\
Validate the config and the files it names, then exit. Hooks run this when
building an image so mistakes fail the build, not the boot

Usage: portcullisd check [OPTIONS]

Options:
  -c, --config <CONFIG>  Configuration file [default:
                         /etc/portcullis/portcullisd.toml]
      --root <DIR>       Look up the config's paths under this directory (an
                         image tree) [default: /]
      --list-files       Print the files an image needs ('KIND PATH' lines)
                         instead of the summary
  -v, --verbose          More log output
  -h, --help             Print help
";

const HELP_HELP: &str = "\
Print this message or the help of the given subcommand(s)

Usage: portcullisd help [COMMAND]...

Arguments:
  [COMMAND]...  Print help for the subcommand(s)
";

/// The help text of the top level (`None`) or of a subcommand.
pub fn help(subcommand: Option<&str>) -> Option<&'static str> {
    match subcommand {
        None => Some(MAIN_HELP),
        Some("run") => Some(RUN_HELP),
        Some("keygen") => Some(KEYGEN_HELP),
        Some("check") => Some(CHECK_HELP),
        Some("help") => Some(HELP_HELP),
        Some(_) => None,
    }
}

const SEE_HELP: &str = "run 'portcullisd --help' for usage";

/// How a user-supplied argument appears in an error: control characters
/// escaped (the error stays one line) and cut to a readable length.
fn shown(arg: &OsStr) -> String {
    const MAX: usize = 60;
    let lossy = arg.to_string_lossy();
    let mut out = String::new();
    for (n, c) in lossy.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

fn err(msg: String) -> UsageError {
    UsageError(msg)
}

/// Where in the command line the parser is: options differ per level.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Run,
    Keygen,
    Check,
}

impl Level {
    fn help(self) -> &'static str {
        match self {
            Level::Top => MAIN_HELP,
            Level::Run => RUN_HELP,
            Level::Keygen => KEYGEN_HELP,
            Level::Check => CHECK_HELP,
        }
    }
}

/// The options that take a value.
#[derive(Clone, Copy)]
enum ValueOpt {
    Config,
    Root,
    Type,
}

impl ValueOpt {
    fn name(self) -> &'static str {
        match self {
            ValueOpt::Config => "--config <CONFIG>",
            ValueOpt::Root => "--root <DIR>",
            ValueOpt::Type => "--type <TYPE>",
        }
    }
}

#[derive(Default)]
struct State {
    config: Option<PathBuf>,
    verbose: bool,
    root: Option<PathBuf>,
    file: Option<PathBuf>,
    force: bool,
    key_type: Option<KeyType>,
    list_files: bool,
    /// Which global options were given at the current level: once per
    /// level, and a subcommand's value overrides the top level's.
    config_here: bool,
    verbose_here: bool,
    /// An empty value is refused when parsing ends, not where it occurs,
    /// so that `help` still answers (as clap does).
    empty_value: Option<UsageError>,
}

impl State {
    fn enter_subcommand(&mut self) {
        self.config_here = false;
        self.verbose_here = false;
    }

    fn set(&mut self, opt: ValueOpt, value: OsString) -> Result<(), UsageError> {
        let (slot, here) = match opt {
            ValueOpt::Config => (&mut self.config, &mut self.config_here),
            ValueOpt::Root => (&mut self.root, &mut false),
            ValueOpt::Type => return self.set_type(&value),
        };
        if *here || (matches!(opt, ValueOpt::Root) && slot.is_some()) {
            return Err(err(format!("'{}' given twice; give it once", opt.name())));
        }
        *here = true;
        if value.is_empty() {
            self.empty_value.get_or_insert_with(|| {
                err(format!(
                    "'{}' needs a non-empty value; {SEE_HELP}",
                    opt.name()
                ))
            });
        }
        *slot = Some(PathBuf::from(value));
        Ok(())
    }

    fn set_type(&mut self, value: &OsStr) -> Result<(), UsageError> {
        let ty = value.to_str().and_then(KeyType::parse).ok_or_else(|| {
            err(format!(
                "'--type' is ed25519, ecdsa or rsa, not '{}'",
                shown(value)
            ))
        })?;
        if self.key_type.replace(ty).is_some() {
            return Err(err("'--type <TYPE>' given twice; give it once".into()));
        }
        Ok(())
    }

    fn set_verbose(&mut self) -> Result<(), UsageError> {
        if self.verbose_here {
            return Err(err("'--verbose' given twice; give it once".into()));
        }
        self.verbose_here = true;
        self.verbose = true;
        Ok(())
    }
}

/// One step of reading an option: carry on, or stop with help/version.
enum Step {
    Next,
    Stop(Parsed),
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Parsed, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter();
    let mut level = Level::Top;
    let mut st = State::default();
    let mut only_positionals = false;
    while let Some(arg) = args.next() {
        let bytes = arg.as_encoded_bytes();
        if !only_positionals && bytes == b"--" {
            only_positionals = true;
            continue;
        }
        let step = if only_positionals && level == Level::Top {
            // After `--` the top level takes no words, not even commands.
            return Err(err(format!(
                "unexpected argument '{}'; {SEE_HELP}",
                shown(&arg)
            )));
        } else if only_positionals || bytes == b"-" || !bytes.starts_with(b"-") {
            positional(&mut level, &mut st, arg, &mut args)?
        } else if bytes.starts_with(b"--") {
            long(level, &mut st, arg, &mut args)?
        } else {
            short(level, &mut st, arg, &mut args)?
        };
        if let Step::Stop(p) = step {
            return Ok(p);
        }
    }
    if let Some(e) = st.empty_value {
        return Err(e);
    }
    let command = match level {
        Level::Top | Level::Run => Command::Run,
        Level::Keygen => match st.file {
            Some(file) => Command::Keygen {
                file,
                force: st.force,
                key_type: st.key_type.unwrap_or(KeyType::Ed25519),
            },
            None => {
                return Err(err("keygen needs the FILE to write the key to, e.g. \
                     'portcullisd keygen /etc/portcullis/host_key'"
                    .into()))
            }
        },
        Level::Check => Command::Check {
            root: st.root.unwrap_or_else(|| PathBuf::from("/")),
            list_files: st.list_files,
        },
    };
    Ok(Parsed::Run(Args {
        config: st
            .config
            .unwrap_or_else(|| PathBuf::from(portcullis::config::DEFAULT_PATH)),
        verbose: st.verbose,
        command,
    }))
}

fn positional(
    level: &mut Level,
    st: &mut State,
    arg: OsString,
    rest: &mut impl Iterator<Item = OsString>,
) -> Result<Step, UsageError> {
    match *level {
        Level::Top => match arg.to_str() {
            Some(name @ ("run" | "keygen" | "check")) => {
                *level = match name {
                    "run" => Level::Run,
                    "keygen" => Level::Keygen,
                    _ => Level::Check,
                };
                st.enter_subcommand();
            }
            Some("help") => return help_command(rest).map(Step::Stop),
            _ => {
                return Err(err(format!(
                    "unknown command '{}'; the commands are run, keygen and check",
                    shown(&arg)
                )))
            }
        },
        Level::Keygen if st.file.is_none() && !arg.is_empty() => st.file = Some(PathBuf::from(arg)),
        Level::Keygen if arg.is_empty() => {
            return Err(err(
                "keygen needs a non-empty FILE to write the key to".into()
            ))
        }
        _ => {
            return Err(err(format!(
                "unexpected argument '{}'; {SEE_HELP}",
                shown(&arg)
            )))
        }
    }
    Ok(Step::Next)
}

/// `portcullisd help [COMMAND]`, as clap's generated `help` subcommand.
fn help_command(rest: &mut impl Iterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let Some(name) = rest.next() else {
        return Ok(Parsed::Help(MAIN_HELP));
    };
    let text = name.to_str().and_then(|n| help(Some(n)));
    match (text, rest.next()) {
        (Some(text), None) => Ok(Parsed::Help(text)),
        (None, _) => Err(err(format!(
            "unknown command '{}'; the commands are run, keygen and check",
            shown(&name)
        ))),
        (Some(_), Some(extra)) => Err(err(format!(
            "unexpected argument '{}'; {SEE_HELP}",
            shown(&extra)
        ))),
    }
}

fn missing_value(opt: ValueOpt) -> UsageError {
    err(format!("'{}' needs a value; {SEE_HELP}", opt.name()))
}

/// The value of an option given as a separate argument: a following
/// argument that looks like an option is not taken as the value.
fn next_value(
    opt: ValueOpt,
    rest: &mut impl Iterator<Item = OsString>,
) -> Result<OsString, UsageError> {
    match rest.next() {
        Some(v) if v.as_encoded_bytes().starts_with(b"-") && v.len() > 1 => Err(missing_value(opt)),
        Some(v) => Ok(v),
        None => Err(missing_value(opt)),
    }
}

fn unknown_option(arg: &OsStr) -> UsageError {
    err(format!("unknown option '{}'; {SEE_HELP}", shown(arg)))
}

fn long(
    level: Level,
    st: &mut State,
    arg: OsString,
    rest: &mut impl Iterator<Item = OsString>,
) -> Result<Step, UsageError> {
    let bytes = arg.as_encoded_bytes();
    let body = bytes.get(2..).unwrap_or_default();
    let (name, inline) = match body.iter().position(|&b| b == b'=') {
        Some(eq) => (
            body.get(..eq).unwrap_or_default(),
            Some(body.get(eq + 1..).unwrap_or_default()),
        ),
        None => (body, None),
    };
    let opt = match name {
        b"config" => ValueOpt::Config,
        b"root" if level == Level::Check => ValueOpt::Root,
        b"type" if level == Level::Keygen => ValueOpt::Type,
        b"force" if level == Level::Keygen => {
            if inline.is_some() {
                return Err(err(format!("'--force' takes no value; {SEE_HELP}")));
            }
            if std::mem::replace(&mut st.force, true) {
                return Err(err("'--force' given twice; give it once".into()));
            }
            return Ok(Step::Next);
        }
        b"list-files" if level == Level::Check => {
            if inline.is_some() {
                return Err(err(format!("'--list-files' takes no value; {SEE_HELP}")));
            }
            if std::mem::replace(&mut st.list_files, true) {
                return Err(err("'--list-files' given twice; give it once".into()));
            }
            return Ok(Step::Next);
        }
        b"verbose" | b"help" | b"version" => {
            if inline.is_some() {
                return Err(err(format!(
                    "'--{}' takes no value; {SEE_HELP}",
                    String::from_utf8_lossy(name)
                )));
            }
            return flag(level, st, name, &arg);
        }
        _ => return Err(unknown_option(&arg)),
    };
    let value = match inline {
        Some(v) => os_from_split(v),
        None => next_value(opt, rest)?,
    };
    st.set(opt, value)?;
    Ok(Step::Next)
}

/// An `OsString` from bytes cut out of another one after an ASCII byte.
fn os_from_split(bytes: &[u8]) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        OsStr::from_bytes(bytes).to_os_string()
    }
    #[cfg(not(unix))]
    {
        OsString::from(String::from_utf8_lossy(bytes).into_owned())
    }
}

fn flag(level: Level, st: &mut State, name: &[u8], arg: &OsStr) -> Result<Step, UsageError> {
    match name {
        b"verbose" | b"v" => st.set_verbose().map(|()| Step::Next),
        b"help" | b"h" | b"version" | b"V" if st.empty_value.is_some() => Err(st
            .empty_value
            .clone()
            .unwrap_or_else(|| unknown_option(arg))),
        b"help" | b"h" => Ok(Step::Stop(Parsed::Help(level.help()))),
        b"version" | b"V" if level == Level::Top => Ok(Step::Stop(Parsed::Version)),
        _ => Err(unknown_option(arg)),
    }
}

/// `-v`, `-h`, `-V` and `-c VALUE`, also clustered (`-vc FILE`, `-cFILE`,
/// `-c=FILE`).
fn short(
    level: Level,
    st: &mut State,
    arg: OsString,
    rest: &mut impl Iterator<Item = OsString>,
) -> Result<Step, UsageError> {
    let bytes = arg.as_encoded_bytes();
    let mut i = 1;
    while let Some(&c) = bytes.get(i) {
        i += 1;
        match c {
            b'c' => {
                let tail = bytes.get(i..).unwrap_or_default();
                let tail = tail.strip_prefix(b"=").unwrap_or(tail);
                let value = if tail.is_empty() && bytes.get(i) != Some(&b'=') {
                    next_value(ValueOpt::Config, rest)?
                } else {
                    os_from_split(tail)
                };
                st.set(ValueOpt::Config, value)?;
                return Ok(Step::Next);
            }
            b'v' | b'h' | b'V' => {
                if let Step::Stop(p) = flag(level, st, &[c], &arg)? {
                    return Ok(Step::Stop(p));
                }
            }
            _ => {
                let shown_flag = match std::str::from_utf8(bytes.get(i - 1..).unwrap_or_default()) {
                    Ok(s) => s.chars().next().map(String::from).unwrap_or_default(),
                    Err(_) => "?".into(),
                };
                return Err(err(format!(
                    "unknown option '-{}' in '{}'; {SEE_HELP}",
                    shown(OsStr::new(&shown_flag)),
                    shown(&arg)
                )));
            }
        }
    }
    Ok(Step::Next)
}

// The clap reference definition: read by these tests and by
// examples/gen-docs.rs (the man page), never compiled into the listener.
#[cfg(test)]
#[path = "cli_ref.rs"]
mod cli_ref;

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::cli_ref::{DaemonCli, DaemonCommand};
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn clap_command() -> clap::Command {
        DaemonCli::command().term_width(80)
    }

    /// What clap makes of an argument list, in the hand parser's terms.
    fn by_clap(args: &[&str]) -> Result<Parsed, ()> {
        let argv = std::iter::once("portcullisd").chain(args.iter().copied());
        thread_local! {
            static CMD: clap::Command = clap_command();
        }
        match CMD.with(|c| c.clone()).try_get_matches_from(argv) {
            Ok(m) => {
                let cli = DaemonCli::from_arg_matches(&m).map_err(|_| ())?;
                let command = match cli.command.unwrap_or(DaemonCommand::Run) {
                    DaemonCommand::Run => Command::Run,
                    DaemonCommand::Keygen {
                        file,
                        force,
                        key_type,
                    } => Command::Keygen {
                        file,
                        force,
                        key_type: KeyType::parse(&key_type).ok_or(())?,
                    },
                    DaemonCommand::Check { root, list_files } => {
                        Command::Check { root, list_files }
                    }
                };
                Ok(Parsed::Run(Args {
                    config: cli.config,
                    verbose: cli.verbose,
                    command,
                }))
            }
            Err(e) => match e.kind() {
                clap::error::ErrorKind::DisplayHelp => {
                    let text = e.render().to_string();
                    let found = [MAIN_HELP, RUN_HELP, KEYGEN_HELP, CHECK_HELP, HELP_HELP]
                        .into_iter()
                        .find(|h| *h == text)
                        .unwrap_or_else(|| {
                            panic!("clap help for {args:?} matches no text here:\n{text}")
                        });
                    Ok(Parsed::Help(found))
                }
                clap::error::ErrorKind::DisplayVersion => Ok(Parsed::Version),
                _ => Err(()),
            },
        }
    }

    fn by_hand(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn clap_definition_is_consistent() {
        clap_command().debug_assert();
    }

    #[test]
    fn help_texts_are_clap_rendering_of_the_definition() {
        let mut cmd = clap_command();
        assert_eq!(cmd.render_help().to_string(), MAIN_HELP);
        for name in SUBCOMMANDS {
            let mut cmd = clap_command();
            cmd.build();
            let sub = cmd.find_subcommand_mut(name).unwrap();
            let rendered = sub.render_help().to_string();
            assert_eq!(Some(rendered.as_str()), help(Some(name)), "help of {name}");
        }
        assert_eq!(cmd.render_version(), VERSION);
    }

    #[test]
    fn same_subcommands_and_flags_and_help_mentions_each() {
        let cmd = clap_command();
        let names: Vec<_> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        assert_eq!(names, SUBCOMMANDS);
        let mut levels = vec![(None, cmd.clone())];
        levels.extend(
            cmd.get_subcommands()
                .filter(|s| s.get_name() != "help")
                .map(|s| (Some(s.get_name().to_string()), s.clone())),
        );
        for (name, c) in levels {
            let text = help(name.as_deref()).unwrap();
            for a in cmd.get_arguments().chain(c.get_arguments()) {
                if let Some(l) = a.get_long() {
                    assert!(
                        text.contains(&format!("--{l}")),
                        "help of {name:?} lacks --{l}"
                    );
                }
                if let Some(s) = a.get_short() {
                    assert!(
                        text.contains(&format!("-{s}")),
                        "help of {name:?} lacks -{s}"
                    );
                }
            }
        }
    }

    fn one_line_error(args: Vec<OsString>) -> String {
        let e = parse(args).unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('\r'), "{e:?}");
        assert!(e.len() < 200, "error of {} bytes: {e}", e.len());
        e
    }

    #[test]
    fn what_the_hooks_and_docs_run() {
        let run = |c: &str, v, command| {
            Ok(Parsed::Run(Args {
                config: c.into(),
                verbose: v,
                command,
            }))
        };
        assert_eq!(
            by_hand(&[]),
            run(portcullis::config::DEFAULT_PATH, false, Command::Run)
        );
        assert_eq!(
            by_hand(&["--config", "/etc/portcullis/portcullisd.toml", "-v"]),
            run("/etc/portcullis/portcullisd.toml", true, Command::Run)
        );
        assert_eq!(
            by_hand(&["check", "--config", "/etc/p.toml", "--root", "/tmp/img"]),
            run(
                "/etc/p.toml",
                false,
                Command::Check {
                    root: "/tmp/img".into(),
                    list_files: false,
                }
            )
        );
        assert_eq!(
            by_hand(&["keygen", "/etc/portcullis/host_key"]),
            run(
                portcullis::config::DEFAULT_PATH,
                false,
                Command::Keygen {
                    file: "/etc/portcullis/host_key".into(),
                    force: false,
                    key_type: KeyType::Ed25519,
                }
            )
        );
        for args in [
            &["keygen", "--force", "/k"][..],
            &["keygen", "/k", "--force"],
            &["-v", "keygen", "/k", "--force"],
        ] {
            let want = Command::Keygen {
                file: "/k".into(),
                force: true,
                key_type: KeyType::Ed25519,
            };
            match (by_hand(args), by_clap(args)) {
                (Ok(Parsed::Run(a)), Ok(Parsed::Run(b))) => {
                    assert_eq!(a.command, want, "{args:?}");
                    assert_eq!(b.command, want, "{args:?}");
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        for (args, key_type) in [
            (&["keygen", "--type", "ecdsa", "/k"][..], KeyType::Ecdsa),
            (&["keygen", "/k", "--type=rsa"], KeyType::Rsa),
            (&["keygen", "--type", "ed25519", "/k"], KeyType::Ed25519),
        ] {
            let want = Command::Keygen {
                file: "/k".into(),
                force: false,
                key_type,
            };
            match (by_hand(args), by_clap(args)) {
                (Ok(Parsed::Run(a)), Ok(Parsed::Run(b))) => {
                    assert_eq!(a.command, want, "{args:?}");
                    assert_eq!(b.command, want, "{args:?}");
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        for args in [
            &["keygen", "--type", "dsa", "/k"][..],
            &["keygen", "--type", "ecdsa", "--type", "rsa", "/k"],
            &["keygen", "/k", "--type"],
            &["check", "--type", "rsa"],
            &["keygen", "/k", "--force", "--force"],
            &["keygen", "--force=yes", "/k"],
            &["check", "--force"],
            &["--force", "keygen", "/k"],
        ] {
            assert!(by_hand(args).is_err(), "{args:?}");
            assert!(by_clap(args).is_err(), "{args:?}");
        }
        assert_eq!(
            by_hand(&["keygen", "--", "-k"]),
            run(
                portcullis::config::DEFAULT_PATH,
                false,
                Command::Keygen {
                    file: "-k".into(),
                    force: false,
                    key_type: KeyType::Ed25519,
                }
            )
        );
        assert_eq!(by_hand(&["--version"]), Ok(Parsed::Version));
        assert_eq!(by_hand(&["help", "keygen"]), Ok(Parsed::Help(KEYGEN_HELP)));
        assert_eq!(by_hand(&["check", "-h"]), Ok(Parsed::Help(CHECK_HELP)));
    }

    #[test]
    fn mistakes_get_one_line_saying_what_to_do() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            one_line_error(os(&["--bogus"])),
            "unknown option '--bogus'; run 'portcullisd --help' for usage"
        );
        assert_eq!(
            one_line_error(os(&["start"])),
            "unknown command 'start'; the commands are run, keygen and check"
        );
        assert_eq!(
            one_line_error(os(&["--config"])),
            "'--config <CONFIG>' needs a value; run 'portcullisd --help' for usage"
        );
        assert_eq!(
            one_line_error(os(&["check", "--root", "-v"])),
            "'--root <DIR>' needs a value; run 'portcullisd --help' for usage"
        );
        assert!(
            one_line_error(os(&["keygen"])).contains("portcullisd keygen /etc/portcullis/host_key")
        );
        assert!(one_line_error(os(&["run", "--root=/"])).starts_with("unknown option '--root=/'"));
        assert!(one_line_error(os(&["-vx"])).starts_with("unknown option '-x' in '-vx'"));
        assert!(one_line_error(os(&["-c", "a", "-c", "b"])).contains("given twice"));
        assert!(one_line_error(os(&["run", "--version"])).starts_with("unknown option"));
    }

    #[test]
    fn hostile_arguments_are_refused_on_one_short_line() {
        use std::os::unix::ffi::OsStringExt;
        let huge = "x".repeat(1 << 20);
        let e = one_line_error(vec![format!("--{huge}").into()]);
        assert!(e.contains('…'), "{e}");
        one_line_error(vec![huge.clone().into()]);
        one_line_error(vec!["keygen".into(), "a".into(), huge.clone().into()]);
        // Control characters and escapes are shown escaped, never raw.
        let e = one_line_error(vec!["--a\nb\x1b[2J\r".into()]);
        assert!(!e.contains('\x1b'), "{e:?}");
        // Bytes that are not UTF-8, where a name is expected and as values.
        one_line_error(vec![OsString::from_vec(vec![0xff, 0xfe])]);
        one_line_error(vec![OsString::from_vec(b"--\xffroot".to_vec())]);
        one_line_error(vec![OsString::from_vec(b"-v\xff".to_vec())]);
        let raw = OsString::from_vec(b"/tmp/\xff.toml".to_vec());
        match parse(vec!["-c".into(), raw.clone()]) {
            Ok(Parsed::Run(a)) => assert_eq!(a.config.as_os_str(), raw),
            other => panic!("{other:?}"),
        }
        match parse(vec![OsString::from_vec(
            b"--config=/tmp/\xff.toml".to_vec(),
        )]) {
            Ok(Parsed::Run(a)) => assert_eq!(a.config.as_os_str(), raw),
            other => panic!("{other:?}"),
        }
        // A huge path is a value like any other: the config loader judges it.
        match parse(vec!["-c".into(), huge.clone().into()]) {
            Ok(Parsed::Run(a)) => assert_eq!(a.config.as_os_str().len(), huge.len()),
            other => panic!("{other:?}"),
        }
        // Many arguments: refused at the first surplus one.
        let many = std::iter::repeat_n(OsString::from("-v"), 100_000);
        assert!(parse(many).unwrap_err().to_string().contains("given twice"));
        let e = one_line_error(vec!["keygen".into(), "a".into(), "b".into()]);
        assert!(e.starts_with("unexpected argument 'b'"), "{e}");
        // Every short option character in every position.
        for b in 0u8..=255 {
            let _ = parse(vec![OsString::from_vec(vec![b'-', b])]);
            let _ = parse(vec![OsString::from_vec(vec![b'-', b'v', b, b'c'])]);
            let _ = parse(vec![OsString::from_vec(vec![b'-', b'-', b, b'='])]);
        }
    }

    /// Every argument list of up to three words from a vocabulary covering
    /// each subcommand, option form and mistake: both parsers agree on
    /// accept (with the same result), help, version, or refuse.
    #[test]
    fn agrees_with_clap_on_every_short_argument_list() {
        let words = [
            "run",
            "keygen",
            "check",
            "help",
            "x",
            "-",
            "--",
            "",
            "-v",
            "--verbose",
            "-c",
            "--config",
            "--config=a",
            "-cb",
            "-c=d",
            "-vc",
            "-cv",
            "--root",
            "--root=r",
            "--list-files",
            "--list-files=1",
            "-h",
            "--help",
            "-V",
            "--version",
            "--bogus",
            "-z",
            "-vv",
            "--verbose=1",
        ];
        let mut lists: Vec<Vec<&str>> = vec![vec![]];
        for len in 1..=3 {
            let mut next = Vec::new();
            for l in lists.iter().filter(|l| l.len() == len - 1) {
                for w in words {
                    let mut n = l.clone();
                    n.push(w);
                    next.push(n);
                }
            }
            lists.extend(next);
        }
        let mut disagreements = Vec::new();
        for l in &lists {
            let c = by_clap(l);
            let h = by_hand(l);
            let same = match (&c, &h) {
                (Ok(a), Ok(b)) => a == b,
                (Err(()), Err(_)) => true,
                _ => false,
            };
            if !same {
                disagreements.push(format!("{l:?}: clap {c:?}, hand {h:?}"));
            }
        }
        assert!(
            disagreements.is_empty(),
            "{} of {} lists differ:\n{}",
            disagreements.len(),
            lists.len(),
            disagreements
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
