//! Lint: the mkinitcpio runtime hook runs under Arch's busybox, whose ash
//! runs no applet without its link, and Arch links only the applets its
//! `mkinitcpio-busybox` build enables (no `tr`, `stty`, `od`, `find`,
//! `xargs`). That list is upstream material we do not copy into the repo:
//! it is read from `$PORTCULLIS_ARCH_APPLETS`, else from
//! `../shared/third_party/arch-mkinitcpio-busybox-applets.txt` beside the
//! checkout. Without it the lint still refuses the applets known to be
//! missing (the five above), and says that the full check was skipped.
//! A command the hook calls outside that list, outside ash's
//! builtins, the hook's own functions, mkinitcpio's `init_functions` and the
//! binaries our install hook and `base`/`udev` add, fails here rather than at
//! boot on an Arch server.
//!
//! The command finder is a small shell tokenizer: quotes, comments, command
//! substitutions, subshells, pipelines, `case` patterns, `for` headers,
//! function definitions, assignments and redirections. Heredoc bodies are
//! read as code (the udhcpc script is one), except their end markers.
//!
//! Also here: the hook's netmask conversion, run by a real shell with no
//! PATH (builtins only), since `tr` is what broke it on Arch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Op(&'static str),
}

/// Splits shell text into words and operators. Quoted text becomes part of
/// a word (its content kept, so a quoted command name is still seen);
/// `$(…)` and backquotes become `Op("$(")` … `Op("$)")` around their tokens.
fn tokenize(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut heredoc_ends: Vec<String> = Vec::new();
    let mut i = 0;
    let mut word = String::new();
    // Open `$(`: the paren depth inside each, to find its closing `)`.
    let mut substs: Vec<i32> = Vec::new();
    let mut in_dq = false;
    // Contexts to return to when a `$(` opened inside double quotes closes.
    let mut dq_stack: Vec<bool> = Vec::new();
    let mut line_start = true;
    fn flush(word: &mut String, toks: &mut Vec<Tok>) {
        if !word.is_empty() {
            toks.push(Tok::Word(std::mem::take(word)));
        }
    }
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if line_start && !in_dq {
            // A heredoc end marker alone on its line.
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p);
            let line: String = chars[i..end].iter().collect();
            if heredoc_ends.iter().any(|m| line.trim() == m) {
                heredoc_ends.retain(|m| m != line.trim());
                i = end;
                continue;
            }
            line_start = false;
        }
        if in_dq {
            match c {
                '"' => in_dq = false,
                '\\' => {
                    word.push(next.unwrap_or(' '));
                    i += 1;
                }
                '$' if next == Some('(') && chars.get(i + 2) != Some(&'(') => {
                    flush(&mut word, &mut toks);
                    toks.push(Tok::Op("$("));
                    dq_stack.push(true);
                    substs.push(0);
                    in_dq = false;
                    i += 1;
                }
                '`' => panic!("backquotes inside double quotes: use $(...)"),
                _ => word.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .expect("unclosed '");
                word.extend(&chars[i + 1..i + 1 + end]);
                i += end + 1;
            }
            '"' => in_dq = true,
            '\\' => {
                if next != Some('\n') {
                    word.push(next.unwrap_or(' '));
                }
                i += 1;
            }
            '#' if word.is_empty() => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '$' if next == Some('(') && chars.get(i + 2) == Some(&'(') => {
                // Arithmetic: part of the word, up to the matching "))".
                let mut depth = 0;
                while i < chars.len() {
                    match chars[i] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    word.push(chars[i]);
                    i += 1;
                }
                word.push(')');
            }
            '$' if next == Some('(') => {
                flush(&mut word, &mut toks);
                toks.push(Tok::Op("$("));
                dq_stack.push(false);
                substs.push(0);
                i += 1;
            }
            '(' => {
                flush(&mut word, &mut toks);
                if let Some(d) = substs.last_mut() {
                    *d += 1;
                }
                toks.push(Tok::Op("("));
            }
            ')' => {
                flush(&mut word, &mut toks);
                match substs.last_mut() {
                    Some(0) => {
                        substs.pop();
                        toks.push(Tok::Op("$)"));
                        in_dq = dq_stack.pop().unwrap_or(false);
                    }
                    Some(d) => {
                        *d -= 1;
                        toks.push(Tok::Op(")"));
                    }
                    None => toks.push(Tok::Op(")")),
                }
            }
            '`' => panic!("backquotes: use $(...)"),
            ' ' | '\t' => flush(&mut word, &mut toks),
            '\n' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::Op("\n"));
                line_start = true;
            }
            // >&2, 2>&1: a redirection, not a background job.
            '&' if word.ends_with(['>', '<']) => word.push(c),
            ';' | '&' | '|' => {
                flush(&mut word, &mut toks);
                let two: String = [c, next.unwrap_or(' ')].iter().collect();
                let op = match two.as_str() {
                    ";;" => ";;",
                    "&&" => "&&",
                    "||" => "||",
                    _ => "",
                };
                if op.is_empty() {
                    toks.push(Tok::Op(match c {
                        ';' => ";",
                        '&' => "&",
                        _ => "|",
                    }));
                } else {
                    toks.push(Tok::Op(op));
                    i += 1;
                }
            }
            '<' if next == Some('<') && word.is_empty() => {
                // Heredoc: remember its end marker (quotes stripped).
                let mut j = i + 2;
                if chars.get(j) == Some(&'-') {
                    j += 1;
                }
                let mut marker = String::new();
                while j < chars.len() && !chars[j].is_whitespace() {
                    if !matches!(chars[j], '\'' | '"') {
                        marker.push(chars[j]);
                    }
                    j += 1;
                }
                heredoc_ends.push(marker.clone());
                toks.push(Tok::Word(format!("<<{marker}")));
                i = j;
                continue;
            }
            _ => word.push(c),
        }
        i += 1;
    }
    flush(&mut word, &mut toks);
    toks
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Cmd,
    Args,
    ForHeader,
    CaseWord,
    CaseIn,
    Pattern,
}

/// The commands `src` runs (first words of simple commands) and the
/// functions it defines.
fn commands(src: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let toks = tokenize(src);
    let mut cmds = BTreeSet::new();
    let mut funcs = BTreeSet::new();
    let mut state = State::Cmd;
    let mut saved: Vec<State> = Vec::new();
    let mut case_depth = 0;
    let mut last_cmd: Option<String> = None;
    let mut k = 0;
    while k < toks.len() {
        let t = &toks[k];
        match (state, t) {
            (_, Tok::Op("$(")) => {
                saved.push(state);
                state = State::Cmd;
            }
            (_, Tok::Op("$)")) => state = saved.pop().unwrap_or(State::Args),
            (State::Pattern, Tok::Op(")")) => state = State::Cmd,
            (State::Pattern, Tok::Word(w)) if w == "esac" => {
                case_depth -= 1;
                state = State::Args;
            }
            (State::Pattern, _) => {}
            (State::CaseWord, Tok::Word(_)) => state = State::CaseIn,
            (State::CaseIn, Tok::Word(w)) if w == "in" => state = State::Pattern,
            (State::CaseIn, _) => {}
            (State::ForHeader, Tok::Word(w)) if w == "do" => state = State::Cmd,
            (State::ForHeader, _) => {}
            (_, Tok::Op(";;")) if case_depth > 0 => state = State::Pattern,
            (State::Args, Tok::Op("(")) => {
                // NAME() { ... }: a function definition, not a call.
                if let Some(name) = last_cmd.take() {
                    cmds.remove(&name);
                    funcs.insert(name);
                }
                if toks.get(k + 1) == Some(&Tok::Op(")")) {
                    k += 1;
                }
                state = State::Cmd;
            }
            (_, Tok::Op(_)) => state = State::Cmd,
            (State::Args, Tok::Word(_)) => {}
            (State::Cmd, Tok::Word(w)) => match w.as_str() {
                "if" | "then" | "else" | "elif" | "fi" | "do" | "done" | "while" | "until"
                | "!" | "{" | "}" => {}
                "esac" => case_depth -= 1,
                "for" => state = State::ForHeader,
                "case" => {
                    case_depth += 1;
                    state = State::CaseWord;
                }
                _ if is_assignment(w) || is_redirection(w) => {}
                _ => {
                    if !w.starts_with('$') {
                        cmds.insert(w.clone());
                        last_cmd = Some(w.clone());
                    }
                    state = State::Args;
                }
            },
        }
        k += 1;
    }
    (cmds, funcs)
}

fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

fn is_redirection(w: &str) -> bool {
    w.trim_start_matches(|c: char| c.is_ascii_digit())
        .starts_with(['<', '>'])
}

/// ash builtins (busybox 1.31 with Arch's config).
const BUILTINS: &[&str] = &[
    ".", ":", "[", "alias", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit",
    "export", "false", "getopts", "hash", "kill", "local", "printf", "read", "readonly", "return",
    "set", "shift", "test", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "wait",
];
/// Defined by mkinitcpio's init_functions, which /init sources before hooks.
const INIT_FUNCTIONS: &[&str] = &["err", "msg", "getarg", "poll_device", "resolve_device"];
/// Added by our install hook or by base/udev: util-linux mount and blkid,
/// kmod's applets, cryptsetup, dhcpcd (when there is no udhcpc), the listener.
const ADDED_BINARIES: &[&str] = &[
    "mount",
    "blkid",
    "switch_root",
    "kmod",
    "modprobe",
    "insmod",
    "udevadm",
    "cryptsetup",
    "dhcpcd",
    "/usr/bin/portcullisd",
];

/// Applets known to be missing from Arch's mkinitcpio-busybox (measured;
/// see docs/install/mkinitcpio.md): the lint's floor when the full list is
/// not available.
const KNOWN_MISSING: &[&str] = &["tr", "stty", "od", "find", "xargs"];

/// Arch's applet list, when it can be found (see the module comment).
fn arch_applets() -> Option<BTreeSet<String>> {
    let path = std::env::var_os("PORTCULLIS_ARCH_APPLETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/third_party/arch-mkinitcpio-busybox-applets.txt")
        });
    let text = std::fs::read_to_string(&path).ok()?;
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
    )
}

/// Commands in `src` that Arch's initramfs cannot run: outside the applet
/// list when it is known, else among the applets known to be missing.
fn outside_arch(src: &str) -> Vec<String> {
    let applets = arch_applets();
    let (cmds, funcs) = commands(src);
    cmds.into_iter()
        .filter(|c| match &applets {
            Some(list) => {
                !list.contains(c)
                    && !BUILTINS.contains(&c.as_str())
                    && !INIT_FUNCTIONS.contains(&c.as_str())
                    && !ADDED_BINARIES.contains(&c.as_str())
                    && !funcs.contains(c)
            }
            None => KNOWN_MISSING.contains(&c.as_str()) && !funcs.contains(c),
        })
        .collect()
}

#[test]
fn runtime_hook_uses_only_arch_applets() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/initramfs/mkinitcpio/hooks/portcullis"
    );
    // The hook sources the libraries every generator shares: they run there too.
    let lib = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/initramfs/common/portcullis-lib.sh"
    );
    let net = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/initramfs/common/portcullis-net.sh"
    );
    let src = std::fs::read_to_string(path).unwrap()
        + &std::fs::read_to_string(lib).unwrap()
        + &std::fs::read_to_string(net).unwrap();
    if arch_applets().is_none() {
        eprintln!(
            "note: Arch's applet list not found (PORTCULLIS_ARCH_APPLETS or \
             ../shared/third_party/arch-mkinitcpio-busybox-applets.txt): checking only \
             the applets known to be missing, {KNOWN_MISSING:?}"
        );
    }
    let bad = outside_arch(&src);
    assert!(
        bad.is_empty(),
        "{path} calls commands that Arch's mkinitcpio-busybox does not link: {bad:?}; \
         use shell arithmetic/builtins or an applet Arch links"
    );
    // The finder really reads this hook: it sees the commands it must see.
    let (cmds, funcs) = commands(&src);
    for c in [
        "ip",
        "udhcpc",
        "cryptsetup",
        "dd",
        "grep",
        "awk",
        "sleep",
        "resolve_device",
        "rm",
    ] {
        assert!(cmds.contains(c), "{c} not found among {cmds:?}");
    }
    assert!(funcs.contains("run_hook") && funcs.contains("portcullis_prefix"));
    assert!(funcs.contains("portcullis_stop") && funcs.contains("portcullis_flush"));
    assert!(!cmds.contains("run_hook"), "a definition is not a call");
}

#[test]
fn lint_catches_what_arch_lacks() {
    // The old netmask conversion: tr in a command substitution in a for list.
    let old = "f() {\n    for i in $(echo \"$mask\" | tr . ' '); do\n        :\n    done\n}\n";
    assert_eq!(outside_arch(old), ["tr"]);
    assert_eq!(outside_arch("x=\"$(od -An -tx1 /dev/urandom)\"\n"), ["od"]);
    assert_eq!(
        outside_arch(
            "case $a in\n    x|stty) stty sane </dev/console ;;\n    *) find / ;;\nesac\n"
        ),
        ["find", "stty"]
    );
    assert_eq!(outside_arch("( xargs kill ) &\n"), ["xargs"]);
    assert_eq!(outside_arch("echo x >&2 2>&1 & od\n"), ["od"]);
    assert_eq!(
        outside_arch("if ! seq 3 >/dev/null; then tr a b; fi\n"),
        ["tr"]
    );
}

#[test]
fn lint_ignores_words_that_are_not_commands() {
    let ok = "# tr and stty in a comment\n\
              echo \"tr (stty) is; not | run\" 'find && xargs'\n\
              IFS=: read -r a b <<SPEC\n$spec\nSPEC\n\
              n=$((n >> 1))\n\
              case $x in\n    tr|od) echo no ;;\nesac\n\
              for w in tr stty; do echo \"$w\"; done\n\
              my_func() {\n    echo hi\n}\n\
              my_func 2>/dev/null\n";
    assert_eq!(outside_arch(ok), Vec::<String>::new());
}

/// The hook's netmask conversion, run by a POSIX shell (dash here, ash on
/// Arch): dotted masks and prefix lengths, with no `tr` to lean on.
#[test]
fn netmask_to_prefix_in_the_hook() {
    let hook = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/initramfs/mkinitcpio/hooks/portcullis"
    );
    let prefix = |mask: &str| {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", ". \"$0\"; portcullis_prefix \"$1\"", hook, mask])
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(prefix("255.255.255.0").as_deref(), Some("24"));
    assert_eq!(prefix("255.255.240.0").as_deref(), Some("20"));
    assert_eq!(prefix("255.255.255.255").as_deref(), Some("32"));
    assert_eq!(prefix("16").as_deref(), Some("16"));
    assert_eq!(prefix("").as_deref(), Some("24"));
    for bad in ["0.0.0.0", "255.255.x.0", "255.255.256.0", "33", "24a"] {
        assert_eq!(prefix(bad), None, "{bad:?} accepted");
    }
}
