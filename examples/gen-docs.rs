//! Generates the man pages and shell completions the packages install, from
//! the definitions they document, so nothing is written twice:
//! `portcullis(1)` and one page per subcommand from the client's clap
//! definition, `portcullisd(8)` from the listener's clap reference
//! (`src/bin/portcullisd/cli_ref.rs`), `portcullis-preflight(8)` from its
//! clap definition (`src/bin/portcullis-preflight/cli.rs`), `portcullisd.toml(5)` from
//! `docs/config.md` plus the annotated `examples/portcullisd.toml`, and the
//! bash, zsh and fish completions with clap_complete.
//!
//! Usage: `cargo run --example gen-docs -- OUTDIR` (the Makefile's `docs`
//! target). Writes OUTDIR/man/man{1,5,8}/… and OUTDIR/completions/….

use clap::CommandFactory;
use clap_complete::Shell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[path = "../src/bin/portcullisd/cli_ref.rs"]
mod cli_ref;

#[path = "../src/bin/portcullis-preflight/cli.rs"]
mod preflight_cli;

const MANUAL: &str = "Portcullis Manual";
const SOURCE: &str = concat!("portcullis ", env!("CARGO_PKG_VERSION"));

/// The client's clap definition: the one line to re-point when it moves.
fn client_command() -> clap::Command {
    portcullis::cli::command()
}

fn main() {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run --example gen-docs -- OUTDIR");
        std::process::exit(2);
    };
    if let Err(e) = generate(&out) {
        eprintln!("gen-docs: {e}");
        std::process::exit(1);
    }
}

fn generate(out: &Path) -> std::io::Result<()> {
    let man1 = out.join("man/man1");
    let man5 = out.join("man/man5");
    let man8 = out.join("man/man8");
    let comp = out.join("completions");
    for d in [&man1, &man5, &man8, &comp] {
        fs::create_dir_all(d)?;
    }

    let mut client = client_command().disable_help_subcommand(true);
    client.build();
    man_pages(client.clone(), "1", &man1)?;

    let mut daemon = cli_ref::DaemonCli::command().disable_help_subcommand(true);
    daemon.build();
    man_pages(daemon, "8", &man8)?;

    let mut preflight = preflight_cli::PreflightCli::command();
    preflight.build();
    render(preflight, "8", &man8)?;

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config_md = fs::read_to_string(repo.join("docs/config.md"))?;
    let example = fs::read_to_string(repo.join("examples/portcullisd.toml"))?;
    fs::write(
        man5.join("portcullisd.toml.5"),
        config_page(&config_md, &example),
    )?;

    for (shell, name) in [
        (Shell::Bash, "portcullis.bash"),
        (Shell::Zsh, "_portcullis"),
        (Shell::Fish, "portcullis.fish"),
    ] {
        let mut f = fs::File::create(comp.join(name))?;
        clap_complete::generate(shell, &mut client, "portcullis", &mut f);
        f.flush()?;
    }
    Ok(())
}

/// One page for `cmd` and, git-style, one per visible subcommand
/// (`portcullis-rescue-mount.1`).
fn man_pages(cmd: clap::Command, section: &str, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub.clone(), section, dir)?;
    }
    render(cmd, section, dir)
}

fn render(cmd: clap::Command, section: &str, dir: &Path) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd)
        .section(section)
        .source(SOURCE)
        .manual(MANUAL)
        .generate_to(dir)
        .map(|_| ())
}

/// `portcullisd.toml(5)`: docs/config.md (a title, one paragraph, the key
/// table, `##` sections with paragraphs and `- ` lists) turned into roff.
fn config_page(md: &str, example: &str) -> String {
    let mut r = format!(
        ".TH PORTCULLISD.TOML 5 \"\" \"{SOURCE}\" \"{MANUAL}\"\n\
         .SH NAME\nportcullisd.toml \\- configuration of the portcullis initramfs listener\n\
         .SH DESCRIPTION\n"
    );
    let mut header_seen = false;
    for line in md.lines() {
        let t = line.trim_end();
        if t.starts_with("# ") {
            continue;
        } else if let Some(h) = t.strip_prefix("## ") {
            r.push_str(&format!(".SH {}\n", inline(&h.to_uppercase())));
        } else if t.starts_with('|') {
            let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
            if !header_seen {
                header_seen = true;
                r.push_str(".SH KEYS\n");
            } else if let [key, default, meaning] = cells.as_slice() {
                if key.starts_with("---") {
                    continue;
                }
                r.push_str(&format!(
                    ".TP\n{} (default: {})\n{}\n",
                    inline(key),
                    inline(default),
                    inline(meaning)
                ));
            }
        } else if let Some(item) = t.strip_prefix("- ") {
            r.push_str(&format!(".IP \\(bu 2\n{}\n", inline(item)));
        } else if t.is_empty() {
            r.push_str(".PP\n");
        } else {
            r.push_str(&inline(t.trim_start()));
            r.push('\n');
        }
    }
    r.push_str(".SH EXAMPLE\n.nf\n");
    for line in example.lines() {
        r.push_str(&escape(line));
        r.push('\n');
    }
    r.push_str(
        ".fi\n.SH FILES\n.TP\n/etc/portcullis/portcullisd.toml\nthe listener's configuration\n\
         .TP\n/etc/portcullis/initramfs.conf\nhow the initramfs hooks build and start the listener\n\
         .SH SEE ALSO\n\\fBportcullisd\\fR(8), \\fBportcullis\\fR(1)\n",
    );
    r
}

/// Roff-escapes a line of text: backslashes, and a leading `.` or `'`
/// that roff would read as a request.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Markdown inline code and bold to roff bold; everything else escaped.
fn inline(s: &str) -> String {
    let s = escape(s);
    let mut out = String::with_capacity(s.len());
    let mut code = false;
    let mut bold = false;
    let mut rest = s.as_str();
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("**") {
            bold = !bold;
            out.push_str(if bold { "\\fB" } else { "\\fR" });
            rest = r;
            continue;
        }
        if c == '`' {
            code = !code;
            out.push_str(if code { "\\fB" } else { "\\fR" });
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}
