//! GRUB's `grub.cfg` as `grub-mkconfig` writes it: the menu (entries and
//! submenus, with titles and ids), the `set default=` choices, the
//! variables set at top level, and where `blscfg` (Fedora) puts the Boot
//! Loader Specification entries. Also `grubenv` and choosing the default
//! entry the way GRUB does. Pure parsing: no file access.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;

/// One `menuentry`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MenuEntry {
    pub title: String,
    pub id: Option<String>,
    /// The kernel as written (`/vmlinuz-6.1.0-18-amd64`), when the entry
    /// boots Linux.
    pub linux: Option<String>,
    /// The rest of the `linux` line, variables not yet expanded.
    pub args: Vec<String>,
    /// Every path of the `initrd` line, in order.
    pub initrds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Entry(MenuEntry),
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
    /// Where `blscfg` adds the BLS entries to the menu.
    Bls,
}

/// What a `grub.cfg` says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub menu: Vec<Item>,
    /// Every `set default=` value outside menu entries, in file order.
    pub defaults: Vec<String>,
    /// Other variables set outside menu entries (last value wins).
    pub vars: HashMap<String, String>,
}

/// Splits a line into commands (at unquoted `;`) of words, as GRUB's
/// lexer does for what grub-mkconfig writes: quotes removed, backslash
/// escapes, `#` comments. An unquoted `{` or `}` is a command of its own,
/// so a block may share its line with what it holds.
fn commands(line: &str) -> Vec<Vec<String>> {
    struct Lexer {
        out: Vec<Vec<String>>,
        words: Vec<String>,
        cur: String,
        has: bool,
        quoted: bool,
    }
    impl Lexer {
        fn end_word(&mut self) {
            if !self.has {
                return;
            }
            let word = std::mem::take(&mut self.cur);
            if !self.quoted && (word == "{" || word == "}") {
                self.end_command();
                self.out.push(vec![word]);
            } else {
                self.words.push(word);
            }
            self.has = false;
            self.quoted = false;
        }
        fn end_command(&mut self) {
            if !self.words.is_empty() {
                self.out.push(std::mem::take(&mut self.words));
            }
        }
    }
    let mut lx = Lexer {
        out: Vec::new(),
        words: Vec::new(),
        cur: String::new(),
        has: false,
        quoted: false,
    };
    let mut quote = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                lx.has = true;
                lx.quoted = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(n) = chars.next() {
                    lx.cur.push(n);
                    lx.has = true;
                }
            }
            (None, '#') if !lx.has => break,
            (None, ';') => {
                lx.end_word();
                lx.end_command();
            }
            (None, c) if c.is_whitespace() => lx.end_word(),
            (_, c) => {
                lx.cur.push(c);
                lx.has = true;
            }
        }
    }
    lx.end_word();
    lx.end_command();
    lx.out
}

/// The title and id of a `menuentry`/`submenu` command.
fn title_and_id(words: &[String]) -> (String, Option<String>) {
    let title = words.get(1).cloned().unwrap_or_default();
    let id = words
        .iter()
        .position(|w| w == "--id" || w == "$menuentry_id_option")
        .and_then(|i| words.get(i + 1))
        .cloned();
    (title, id)
}

/// An open `menuentry` or `submenu` block and the brace depth it opened at.
enum Frame {
    Entry(MenuEntry),
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
}

pub fn parse(text: &str) -> Config {
    let mut config = Config::default();
    let mut stack: Vec<(Frame, usize)> = Vec::new();
    let mut depth = 0usize;
    for line in text.lines() {
        for mut words in commands(line) {
            // `then set default=…` on one line: the keyword is no command.
            if matches!(
                words.first().map(String::as_str),
                Some("then" | "else" | "do")
            ) {
                words.remove(0);
            }
            let head = words.first().map(String::as_str).unwrap_or_default();
            let in_entry = matches!(stack.last(), Some((Frame::Entry(_), _)));
            match head {
                "menuentry" | "submenu" if !in_entry => {
                    let (title, id) = title_and_id(&words);
                    let frame = if head == "menuentry" {
                        Frame::Entry(MenuEntry {
                            title,
                            id,
                            ..MenuEntry::default()
                        })
                    } else {
                        Frame::Submenu {
                            title,
                            id,
                            items: Vec::new(),
                        }
                    };
                    stack.push((frame, depth));
                }
                "linux" | "linuxefi" | "linux16" => {
                    if let Some((Frame::Entry(e), _)) = stack.last_mut() {
                        e.linux = words.get(1).cloned();
                        e.args = words.iter().skip(2).cloned().collect();
                    }
                }
                "initrd" | "initrdefi" | "initrd16" => {
                    if let Some((Frame::Entry(e), _)) = stack.last_mut() {
                        e.initrds = words.iter().skip(1).cloned().collect();
                    }
                }
                "blscfg" if !in_entry => push_item(&mut stack, &mut config.menu, Item::Bls),
                "set" if stack.is_empty() => {
                    for w in words.iter().skip(1) {
                        if let Some((name, value)) = w.split_once('=') {
                            if name == "default" {
                                config.defaults.push(value.to_string());
                            } else {
                                config.vars.insert(name.to_string(), value.to_string());
                            }
                        }
                    }
                }
                _ => {}
            }
            for w in &words {
                if w == "{" {
                    depth += 1;
                } else if w == "}" {
                    depth = depth.saturating_sub(1);
                    if stack.last().is_some_and(|(_, open)| *open == depth) {
                        if let Some((frame, _)) = stack.pop() {
                            let item = match frame {
                                Frame::Entry(e) => Item::Entry(e),
                                Frame::Submenu { title, id, items } => {
                                    Item::Submenu { title, id, items }
                                }
                            };
                            push_item(&mut stack, &mut config.menu, item);
                        }
                    }
                }
            }
        }
    }
    config
}

/// Adds a closed item to the innermost open submenu, or to the menu.
fn push_item(stack: &mut [(Frame, usize)], menu: &mut Vec<Item>, item: Item) {
    match stack.last_mut() {
        Some((Frame::Submenu { items, .. }, _)) => items.push(item),
        Some((Frame::Entry(_), _)) => {}
        None => menu.push(item),
    }
}

/// `grubenv`: `name=value` lines after a comment, padded with `#`.
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `$name` and `${name}` replaced from `vars`; unknown ones are empty,
/// as in GRUB.
pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.split_once('}') {
                Some((name, tail)) => (name, tail),
                None => (braced, ""),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (
                after.get(..end).unwrap_or_default(),
                after.get(end..).unwrap_or_default(),
            )
        };
        if name.is_empty() {
            out.push('$');
        } else if let Some(v) = vars.get(name) {
            out.push_str(v);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Which `set default=` GRUB takes, expanded: `next_entry` from grubenv
/// when set (a one-time `grub-reboot`), else the last plain choice, with
/// `${saved_entry}` read from grubenv. `0` when nothing says.
pub fn default_choice(config: &Config, env: &HashMap<String, String>) -> String {
    let next = env.get("next_entry").filter(|v| !v.is_empty());
    if let Some(next) = next {
        if config.defaults.iter().any(|d| d.contains("next_entry")) {
            return next.clone();
        }
    }
    config
        .defaults
        .iter()
        .rev()
        .find(|d| !d.contains("next_entry"))
        .map(|d| expand(d, env))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "0".into())
}

/// The entry `choice` names: `>`-separated parts, each an index, an id or
/// a title (GRUB tries the id first). A submenu at the end means its
/// first entry. `None` when nothing matches (GRUB then boots entry 0).
pub fn select<'a>(menu: &'a [Item], choice: &str) -> Option<&'a MenuEntry> {
    let mut items = menu;
    let parts: Vec<&str> = choice.split('>').collect();
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        let item = match part.parse::<usize>() {
            Ok(n) => items.get(n),
            Err(_) => items
                .iter()
                .find(|it| item_id(it) == Some(part))
                .or_else(|| items.iter().find(|it| item_title(it) == Some(part))),
        }?;
        match item {
            Item::Entry(e) => return (i == last).then_some(e),
            Item::Submenu { items: inner, .. } => {
                if i == last {
                    return first_entry(inner);
                }
                items = inner;
            }
            Item::Bls => return None,
        }
    }
    None
}

fn item_id(item: &Item) -> Option<&str> {
    match item {
        Item::Entry(e) => e.id.as_deref(),
        Item::Submenu { id, .. } => id.as_deref(),
        Item::Bls => None,
    }
}

fn item_title(item: &Item) -> Option<&str> {
    match item {
        Item::Entry(e) => Some(&e.title),
        Item::Submenu { title, .. } => Some(title),
        Item::Bls => None,
    }
}

fn first_entry(items: &[Item]) -> Option<&MenuEntry> {
    items.iter().find_map(|it| match it {
        Item::Entry(e) => Some(e),
        Item::Submenu { items, .. } => first_entry(items),
        Item::Bls => None,
    })
}

/// Every entry, depth first, in menu order.
pub fn flatten(items: &[Item]) -> Vec<&MenuEntry> {
    let mut out = Vec::new();
    for it in items {
        match it {
            Item::Entry(e) => out.push(e),
            Item::Submenu { items, .. } => out.extend(flatten(items)),
            Item::Bls => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const DEBIAN: &str = include_str!("testdata/grub-debian12.cfg");

    #[test]
    fn debian_menu_and_default() {
        let c = parse(DEBIAN);
        assert_eq!(c.menu.len(), 3, "{:#?}", c.menu);
        let all = flatten(&c.menu);
        let titles: Vec<&str> = all.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Debian GNU/Linux",
                "Debian GNU/Linux, with Linux 6.1.0-18-amd64",
                "Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)",
                "Debian GNU/Linux, with Linux 6.1.0-17-amd64",
                "Debian GNU/Linux, with Linux 6.1.0-17-amd64 (recovery mode)",
                "UEFI Firmware Settings",
            ]
        );
        let e = all[0];
        assert_eq!(e.linux.as_deref(), Some("/vmlinuz-6.1.0-18-amd64"));
        assert_eq!(
            e.args,
            [
                "root=/dev/mapper/vg-root",
                "ro",
                "ip=192.0.2.10::192.0.2.1:255.255.255.0::eth0:none",
                "quiet"
            ]
        );
        assert_eq!(e.initrds, ["/initrd.img-6.1.0-18-amd64"]);
        assert_eq!(
            e.id.as_deref(),
            Some("gnulinux-simple-0e7d6b6a-5c7e-4a8e-9f0a-1234567890ab")
        );
        assert_eq!(c.defaults, ["${next_entry}", "0"]);
        assert_eq!(default_choice(&c, &HashMap::new()), "0");
    }

    /// The same system's grub.cfg as Debian 12's own grub.d scripts write
    /// it (testdata/make-grub.sh) reads as the modelled one.
    #[test]
    fn generated_by_grub_d_reads_the_same() {
        let real = parse(include_str!("testdata/grub-debian12-generated.cfg"));
        let model = parse(DEBIAN);
        let mut want = flatten(&model.menu);
        want.retain(|e| e.linux.is_some());
        assert_eq!(flatten(&real.menu), want);
        assert_eq!(real.defaults, model.defaults);
    }

    #[test]
    fn choices_by_index_id_title_and_path() {
        let c = parse(DEBIAN);
        let pick = |s: &str| select(&c.menu, s).map(|e| e.title.as_str());
        assert_eq!(pick("0"), Some("Debian GNU/Linux"));
        assert_eq!(
            pick("1>2"),
            Some("Debian GNU/Linux, with Linux 6.1.0-17-amd64")
        );
        assert_eq!(
            pick("gnulinux-advanced-0e7d6b6a-5c7e-4a8e-9f0a-1234567890ab>gnulinux-6.1.0-17-amd64-advanced-0e7d6b6a-5c7e-4a8e-9f0a-1234567890ab"),
            Some("Debian GNU/Linux, with Linux 6.1.0-17-amd64")
        );
        assert_eq!(
            pick("Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-17-amd64 (recovery mode)"),
            Some("Debian GNU/Linux, with Linux 6.1.0-17-amd64 (recovery mode)")
        );
        // A submenu alone: its first entry.
        assert_eq!(
            pick("1"),
            Some("Debian GNU/Linux, with Linux 6.1.0-18-amd64")
        );
        assert_eq!(pick("7"), None);
        assert_eq!(pick("0>1"), None);
        assert_eq!(pick("nonesuch"), None);
    }

    #[test]
    fn saved_and_next_entries_come_from_grubenv() {
        let c = parse("if [ \"${next_entry}\" ] ; then\n   set default=\"${next_entry}\"\nelse\n   set default=\"${saved_entry}\"\nfi\n");
        let env = parse_env("# GRUB Environment Block\nsaved_entry=1>2\n#########\n");
        assert_eq!(default_choice(&c, &env), "1>2");
        let env = parse_env("# GRUB Environment Block\nsaved_entry=1>2\nnext_entry=0\n####\n");
        assert_eq!(default_choice(&c, &env), "0");
        assert_eq!(default_choice(&c, &HashMap::new()), "0");
    }

    #[test]
    fn words_quotes_and_variables() {
        assert_eq!(
            commands("menuentry 'a \"b\"' --id x\\ y '{' { # c"),
            [vec!["menuentry", "a \"b\"", "--id", "x y", "{"], vec!["{"]]
        );
        assert_eq!(
            commands("if [ x ]; then set default=\"2\"; fi"),
            [
                vec!["if", "[", "x", "]"],
                vec!["then", "set", "default=2"],
                vec!["fi"]
            ]
        );
        let vars: HashMap<String, String> =
            [("kernelopts".to_string(), "root=/dev/x ro".to_string())].into();
        assert_eq!(
            expand("$kernelopts quiet ${gone}$", &vars),
            "root=/dev/x ro quiet $"
        );
        // One line: a menu entry whose braces share its line.
        let c = parse("menuentry 'one' { linux /k a=1 ; initrd /u /i }\nmenuentry two {\n}\n");
        let all = flatten(&c.menu);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].args, ["a=1"]);
        assert_eq!(all[0].initrds, ["/u", "/i"]);
    }
}
