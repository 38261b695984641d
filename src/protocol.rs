//! What travels over the SSH channel between `portcullis` and `portcullisd`:
//! the exec command names, the machine-mode replies, and exit statuses.
//!
//! This module owns encoding only; it does no I/O and knows nothing of russh.
//! The wire format is documented in `docs/protocol.md`; change both together.
//!
//! Parses attacker-controlled exec lines: no `unwrap`, `expect`, indexing or
//! `panic` here.
// Tests may unwrap: the lints guard the code that faces input.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use crate::text::line;
use serde::{Deserialize, Serialize};

/// Version of the machine mode. Bumped on any incompatible change.
pub const VERSION: u32 = 1;
/// Exec commands in machine mode start with this word, then a space and the op.
pub const MACHINE_PREFIX: &str = "portcullis/";
/// Longest exec command line we look at; anything longer is refused.
pub const MAX_COMMAND_LEN: usize = 128;

/// Exit statuses, shared by the listener's exec replies and the client CLI:
/// the one place defining them. `--help` texts are generated from
/// [`exit::TABLE`], so they cannot drift.
pub mod exit {
    pub const UNLOCKED: u8 = 0;
    /// Any other error (bad usage, I/O, configuration).
    pub const ERROR: u8 = 1;
    pub const WRONG_PASSPHRASE: u8 = 2;
    pub const HOST_KEY_UNKNOWN: u8 = 3;
    pub const HOST_KEY_CHANGED: u8 = 4;
    pub const AUTH_REFUSED: u8 = 5;
    pub const UNREACHABLE: u8 = 6;
    pub const NOTHING_TO_UNLOCK: u8 = 7;
    /// The unlock backend failed for a reason other than the passphrase.
    pub const UNLOCK_FAILED: u8 = 8;
    /// Some volumes opened, others are still waiting for another passphrase.
    pub const PARTIAL: u8 = 9;
    /// The tries limit for the pending volumes is used up for this boot.
    pub const NO_TRIES_LEFT: u8 = 10;
    /// Fleet runs (`portcullis unlock GROUP…`): one host or more did not
    /// end well; the per-host records say how.
    pub const SOME_HOSTS_FAILED: u8 = 11;
    /// `portcullis rescue check`: a filesystem needs repair.
    pub const NEEDS_REPAIR: u8 = 12;
    /// The passphrase was sent but no answer came back: whether it opened
    /// anything is unknown (never reported as "unreachable").
    pub const REPLY_LOST: u8 = 13;
    /// `preflight`: remote unlock will fail after the next reboot (one
    /// check failed; each failure names its fix).
    pub const PREFLIGHT_FAIL: u8 = 14;
    /// `preflight`: nothing fails, but one check or more warns.
    pub const PREFLIGHT_WARN: u8 = 15;

    /// Every code with its meaning, in order.
    pub const TABLE: &[(u8, &str)] = &[
        (UNLOCKED, "done (unlocked)"),
        (ERROR, "error (usage, configuration, I/O)"),
        (WRONG_PASSPHRASE, "wrong passphrase"),
        (HOST_KEY_UNKNOWN, "host key unknown"),
        (HOST_KEY_CHANGED, "host key changed or revoked"),
        (AUTH_REFUSED, "auth refused"),
        (UNREACHABLE, "unreachable/timeout (nothing was sent)"),
        (NOTHING_TO_UNLOCK, "nothing to unlock"),
        (UNLOCK_FAILED, "unlock failed on the server"),
        (PARTIAL, "partly unlocked"),
        (NO_TRIES_LEFT, "no tries left"),
        (
            SOME_HOSTS_FAILED,
            "(several hosts) one or more hosts failed",
        ),
        (NEEDS_REPAIR, "(rescue check) a filesystem needs repair"),
        (REPLY_LOST, "passphrase sent, no answer (run status)"),
        (
            PREFLIGHT_FAIL,
            "(preflight) remote unlock will fail after reboot",
        ),
        (PREFLIGHT_WARN, "(preflight) warnings only"),
    ];

    /// "Exit codes: 0 done, 1 error, …" for the codes in `which` (all
    /// when empty), for `--help`.
    pub fn help(which: &[u8]) -> String {
        let parts: Vec<String> = TABLE
            .iter()
            .filter(|(c, _)| which.is_empty() || which.contains(c))
            .map(|(c, m)| format!("{c} {m}"))
            .collect();
        format!("Exit codes: {}.", parts.join(", "))
    }

    /// The meaning of `code`, for messages.
    pub fn meaning(code: u8) -> &'static str {
        TABLE
            .iter()
            .find(|(c, _)| *c == code)
            .map_or("unknown", |(_, m)| m)
    }
}

/// A parsed exec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Human `unlock`: passphrase is one line on stdin.
    Unlock,
    /// Human `status`: a table of what is pending.
    Status,
    Help,
    /// Machine mode: passphrase is all of stdin up to EOF; reply is one JSON line.
    MachineUnlock,
    MachineStatus,
}

/// The line a listener writes instead of its SSH version string when it
/// refuses a connection for now (RFC 4253 4.2 allows lines before the
/// version). Clients that see it report "busy" and may retry.
pub const BUSY_LINE: &str = "portcullisd: busy, try again shortly\r\n";

/// Why an exec command was refused. Never holds the command's text: a user
/// who types `ssh host "unlock PASSPHRASE"` must not see the passphrase
/// echoed back or written to the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    TooLong,
    /// Digits only, at most 8 of them; anything else is `None`.
    UnsupportedVersion(Option<String>),
    /// A known command word followed by arguments it does not take.
    Arguments(&'static str),
    /// Not a command; only the length is kept.
    Unknown {
        len: usize,
    },
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::TooLong => write!(
                f,
                "command longer than {MAX_COMMAND_LEN} bytes; this listener only understands: \
                 unlock, status, help"
            ),
            CommandError::UnsupportedVersion(v) => write!(
                f,
                "protocol version {} is not supported by this listener (it speaks {VERSION}); \
                 use a matching portcullis client",
                v.as_deref().unwrap_or("(not a number)")
            ),
            CommandError::Arguments("unlock") => f.write_str(
                "`unlock` takes no arguments: send the passphrase on stdin \
                 (echo PASS | ssh HOST unlock), or use `ssh -t HOST` for a prompt",
            ),
            CommandError::Arguments(word) => write!(
                f,
                "`{word}` takes no arguments; this listener only understands: unlock, status, help"
            ),
            CommandError::Unknown { len } => write!(
                f,
                "unknown command ({len} bytes, not shown); this listener only understands: \
                 unlock, status, help"
            ),
        }
    }
}

/// Parses the command line of an SSH exec request. Never panics on any input.
pub fn parse_command(raw: &[u8]) -> Result<Command, CommandError> {
    if raw.len() > MAX_COMMAND_LEN {
        return Err(CommandError::TooLong);
    }
    let text = String::from_utf8_lossy(raw);
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let unknown = Err(CommandError::Unknown { len: raw.len() });
    match words.as_slice() {
        ["unlock"] => Ok(Command::Unlock),
        ["status"] => Ok(Command::Status),
        ["help"] => Ok(Command::Help),
        ["unlock", ..] => Err(CommandError::Arguments("unlock")),
        ["status", ..] => Err(CommandError::Arguments("status")),
        ["help", ..] => Err(CommandError::Arguments("help")),
        [first, op] if first.starts_with(MACHINE_PREFIX) => {
            let v = first.get(MACHINE_PREFIX.len()..).unwrap_or("");
            if v != VERSION.to_string() {
                let digits = !v.is_empty() && v.len() <= 8 && v.bytes().all(|b| b.is_ascii_digit());
                return Err(CommandError::UnsupportedVersion(
                    digits.then(|| v.to_string()),
                ));
            }
            match *op {
                "unlock" => Ok(Command::MachineUnlock),
                "status" => Ok(Command::MachineStatus),
                _ => unknown,
            }
        }
        _ => unknown,
    }
}

/// What may be logged about an exec request: the command, or for a refused
/// one its kind and length, never its text.
pub fn describe_request(raw: &[u8], parsed: &Result<Command, CommandError>) -> String {
    match parsed {
        Ok(c) => format!("{c:?}"),
        Err(CommandError::Arguments(word)) => {
            format!("{word} with arguments ({} bytes, not logged)", raw.len())
        }
        Err(CommandError::UnsupportedVersion(v)) => format!(
            "machine mode version {} (unsupported)",
            v.as_deref().unwrap_or("?")
        ),
        Err(CommandError::TooLong) => format!("too long ({} bytes)", raw.len()),
        Err(CommandError::Unknown { len }) => format!("unknown ({len} bytes, not logged)"),
    }
}

/// The exec command our client sends for a machine-mode operation.
pub fn machine_command(op: &str) -> String {
    format!("{MACHINE_PREFIX}{VERSION} {op}")
}

/// State of one volume as the listener reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    /// Still locked, waiting for a passphrase.
    Pending,
    /// Open (by us or by someone else, such as the console prompt).
    Open,
    /// The device was not found (yet).
    Missing,
    /// The tries limit for this boot is used up.
    Exhausted,
    /// A passphrase is being tried on it right now (the KDF can take
    /// seconds); ask again shortly.
    Unlocking,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VolumeInfo {
    pub name: String,
    pub device: String,
    pub backend: String,
    pub state: VolumeState,
    /// `None` when the backend does not limit tries.
    pub tries_left: Option<u32>,
}

/// Overall result of one unlock request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every volume is open; boot continues.
    Unlocked,
    /// Some volumes opened with this passphrase, others still wait.
    Partial,
    WrongPassphrase,
    NothingToUnlock,
    NoTriesLeft,
    /// The backend failed for another reason; `message` says which.
    Failed,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Unlocked => exit::UNLOCKED,
            Outcome::Partial => exit::PARTIAL,
            Outcome::WrongPassphrase => exit::WRONG_PASSPHRASE,
            Outcome::NothingToUnlock => exit::NOTHING_TO_UNLOCK,
            Outcome::NoTriesLeft => exit::NO_TRIES_LEFT,
            Outcome::Failed => exit::UNLOCK_FAILED,
        }
    }
}

/// Reply to `portcullis/1 unlock`, one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UnlockReply {
    pub version: u32,
    pub outcome: Outcome,
    pub volumes: Vec<VolumeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Reply to `portcullis/1 status`, one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatusReply {
    pub version: u32,
    pub volumes: Vec<VolumeInfo>,
}

/// Machine-mode error reply, for requests that never reached the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ErrorReply {
    pub version: u32,
    pub error: String,
}

/// Encodes a reply as one line of JSON ending in `\n`.
pub fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail; fall back to an error
    // object rather than panicking if it ever does.
    let mut v = serde_json::to_vec(value)
        .unwrap_or_else(|_| br#"{"version":1,"error":"internal encoding error"}"#.to_vec());
    v.push(b'\n');
    v
}

/// What a wrong passphrase that used up the last try says.
const LAST_TRY: &str =
    "wrong passphrase; that was the last try for this boot: reboot the server to try again";

/// Human-readable one-line summary of an unlock reply.
pub fn describe_unlock(reply: &UnlockReply) -> String {
    let names = |state: VolumeState| {
        reply
            .volumes
            .iter()
            .filter(|v| v.state == state)
            .map(|v| line(&v.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let base = match reply.outcome {
        Outcome::Unlocked => format!("unlocked: {}; boot continues", names(VolumeState::Open)),
        Outcome::Partial => {
            // The listener may report `partial` when a volume opened but did
            // not show up as open; never print an empty list.
            let open = names(VolumeState::Open);
            let open = if open.is_empty() {
                "none yet".to_string()
            } else {
                open
            };
            format!(
                "partly unlocked: open {open}; still waiting: {}",
                names(VolumeState::Pending)
            )
        }
        Outcome::WrongPassphrase => {
            let left = reply
                .volumes
                .iter()
                .filter(|v| v.state == VolumeState::Pending)
                .filter_map(|v| v.tries_left)
                .min();
            // The answer that used up the last try says so: the next
            // attempt would only get "no tries left".
            let exhausted = reply
                .volumes
                .iter()
                .any(|v| v.state == VolumeState::Exhausted || v.tries_left == Some(0));
            match left {
                Some(0) => LAST_TRY.to_string(),
                None if exhausted => LAST_TRY.to_string(),
                Some(n) => format!("wrong passphrase ({n} tries left)"),
                None => "wrong passphrase".to_string(),
            }
        }
        Outcome::NothingToUnlock => "nothing to unlock: no volume is waiting".to_string(),
        Outcome::NoTriesLeft => {
            "no tries left for this boot: reboot the server to try again".to_string()
        }
        Outcome::Failed => "unlock failed".to_string(),
    };
    match &reply.message {
        Some(m) if !m.is_empty() => format!("{base}: {}", line(m)),
        _ => base,
    }
}

/// Human-readable table for `status`. Names, devices and messages may come
/// from a server we do not control: control characters are shown escaped
/// (`\x1b`), so they can neither add lines nor drive the admin's terminal.
pub fn describe_status(volumes: &[VolumeInfo]) -> String {
    if volumes.is_empty() {
        return "no volumes configured\n".to_string();
    }
    let mut out = String::new();
    for v in volumes {
        let tries = v
            .tries_left
            .map(|n| format!("{n} tries left"))
            .unwrap_or_default();
        let state = match v.state {
            VolumeState::Pending => "pending",
            VolumeState::Open => "open",
            VolumeState::Missing => "device missing",
            VolumeState::Exhausted => "no tries left",
            VolumeState::Unlocking => "unlocking",
        };
        out.push_str(&format!(
            "{:<16} {:<32} {:<15} {:<12} {}\n",
            line(&v.name),
            line(&v.device),
            state,
            line(&v.backend),
            tries
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse_command(b"unlock"), Ok(Command::Unlock));
        assert_eq!(parse_command(b" status \n"), Ok(Command::Status));
        assert_eq!(
            parse_command(b"portcullis/1 unlock"),
            Ok(Command::MachineUnlock)
        );
        assert_eq!(
            parse_command(machine_command("status").as_bytes()),
            Ok(Command::MachineStatus)
        );
        assert!(matches!(
            parse_command(b"portcullis/2 unlock"),
            Err(CommandError::UnsupportedVersion(Some(v))) if v == "2"
        ));
        assert!(matches!(
            parse_command(b"sh -c id"),
            Err(CommandError::Unknown { len: 8 })
        ));
        assert!(matches!(
            parse_command(b"unlock; reboot"),
            Err(CommandError::Unknown { .. })
        ));
        assert_eq!(parse_command(&[b'a'; 500]), Err(CommandError::TooLong));
        assert!(parse_command(&[0xff, 0xfe, 0x00]).is_err());
        assert!(parse_command(b"").is_err());
    }

    /// `ssh host "unlock PASSPHRASE"`: neither the error (echoed to the
    /// user) nor the log line may carry the text.
    #[test]
    fn refused_commands_never_carry_their_text() {
        for raw in [
            &b"unlock hunter2-secret"[..],
            b"status hunter2-secret",
            b"hunter2-secret",
            b"portcullis/1 hunter2-secret",
            b"portcullis/hunter2-secret unlock",
        ] {
            let parsed = parse_command(raw);
            let e = parsed.clone().unwrap_err();
            for shown in [
                e.to_string(),
                format!("{e:?}"),
                describe_request(raw, &parsed),
            ] {
                assert!(!shown.contains("hunter2"), "{shown}");
            }
        }
        let e = parse_command(b"unlock sekrit").unwrap_err();
        assert!(
            e.to_string().contains("send the passphrase on stdin"),
            "{e}"
        );
        assert_eq!(
            describe_request(b"unlock x", &parse_command(b"unlock x")),
            "unlock with arguments (8 bytes, not logged)"
        );
        // Bounded whatever the input.
        let long = vec![b'x'; 100_000];
        assert!(parse_command(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn reply_roundtrip_is_stable() {
        let r = UnlockReply {
            version: VERSION,
            outcome: Outcome::WrongPassphrase,
            volumes: vec![VolumeInfo {
                name: "root".into(),
                device: "/dev/vda2".into(),
                backend: "cryptsetup".into(),
                state: VolumeState::Pending,
                tries_left: Some(4),
            }],
            message: None,
        };
        let line = encode_line(&r);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"version\":1,\"outcome\":\"wrong-passphrase\",\"volumes\":[{\"name\":\"root\",\
             \"device\":\"/dev/vda2\",\"backend\":\"cryptsetup\",\"state\":\"pending\",\
             \"tries-left\":4}]}\n"
        );
        let back: UnlockReply = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(describe_unlock(&r), "wrong passphrase (4 tries left)");
    }

    #[test]
    fn partial_with_nothing_open_names_no_empty_list() {
        let mut r: UnlockReply = serde_json::from_str(
            "{\"version\":1,\"outcome\":\"partial\",\"volumes\":[{\"name\":\"data\",\
             \"device\":\"/dev/vdb\",\"backend\":\"cryptsetup\",\"state\":\"pending\"}]}",
        )
        .unwrap();
        assert_eq!(
            describe_unlock(&r),
            "partly unlocked: open none yet; still waiting: data"
        );
        r.volumes[0].state = VolumeState::Open;
        assert!(describe_unlock(&r).starts_with("partly unlocked: open data;"));
    }

    #[test]
    fn exit_codes_distinct() {
        let all = [
            Outcome::Unlocked,
            Outcome::Partial,
            Outcome::WrongPassphrase,
            Outcome::NothingToUnlock,
            Outcome::NoTriesLeft,
            Outcome::Failed,
        ];
        let mut codes: Vec<u8> = all.iter().map(|o| o.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        // Found by the protocol fuzz target: a volume name from the server
        // added a line and cleared the admin's screen.
        let v = VolumeInfo {
            name: "a\nb\u{1b}[2J".into(),
            device: "/dev/x\r".into(),
            backend: "cryptsetup".into(),
            state: VolumeState::Open,
            tries_left: None,
        };
        let table = describe_status(std::slice::from_ref(&v));
        assert_eq!(table.matches('\n').count(), 1, "{table:?}");
        assert!(
            !table.contains('\u{1b}') && !table.contains('\r'),
            "{table:?}"
        );
        let reply = UnlockReply {
            version: VERSION,
            outcome: Outcome::Unlocked,
            volumes: vec![v],
            message: Some("done\u{1b}]0;title\u{7}".into()),
        };
        let text = describe_unlock(&reply);
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}
