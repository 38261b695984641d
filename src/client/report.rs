//! The one printer for an error that ended an admin command as a whole
//! (bad target, inventory, passphrase source, a rescue flow that failed):
//! a JSON record on stdout with `--json`, else one `error:` line on stderr.
//! Fleet and rescue both use it, so the record has the same keys everywhere:
//! `target`, `command` (rescue only), `outcome`, `error`, any extra keys,
//! `exit-code`.

use serde_json::{Map, Value};

/// What failed, and how to say it.
#[derive(Debug, Clone)]
pub struct ErrorReport<'a> {
    /// The target as the admin named it (several joined by spaces).
    pub target: &'a str,
    /// The subcommand, for commands that have several (`rescue mount`).
    pub command: Option<&'a str>,
    /// `error`, or a more precise kind (`unreachable`, `host-key-changed`).
    pub outcome: &'a str,
    /// The message; may hold remote text, made one line when printed.
    pub message: String,
    pub exit_code: u8,
    /// Whether the text line starts with `TARGET: ` (it does when the
    /// message does not name the host itself).
    pub text_names_target: bool,
    /// Keys between `error` and `exit-code` (rescue: what ran before).
    pub extra: Vec<(&'static str, Value)>,
}

impl ErrorReport<'_> {
    /// The JSON record, keys in the order they are printed.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("target".into(), self.target.into());
        if let Some(c) = self.command {
            m.insert("command".into(), c.into());
        }
        m.insert("outcome".into(), self.outcome.into());
        m.insert("error".into(), self.message.clone().into());
        for (k, v) in &self.extra {
            m.insert((*k).into(), v.clone());
        }
        m.insert("exit-code".into(), self.exit_code.into());
        Value::Object(m)
    }

    /// The stderr line: one line, whatever the message held.
    pub fn text(&self) -> String {
        let msg = if self.text_names_target {
            format!("{}: {}", self.target, self.message)
        } else {
            self.message.clone()
        };
        format!("error: {}", crate::text::line(&msg))
    }

    /// Prints the record (stdout) or the line (stderr); returns the exit code.
    pub fn print(&self, json: bool) -> u8 {
        if json {
            println!("{}", self.json());
        } else {
            eprintln!("{}", self.text());
        }
        self.exit_code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ErrorReport<'static> {
        ErrorReport {
            target: "web1",
            command: None,
            outcome: "error",
            message: "bad\nthing".into(),
            exit_code: 1,
            text_names_target: false,
            extra: vec![],
        }
    }

    #[test]
    fn keys_and_order_match_both_commands() {
        let r = report();
        assert_eq!(
            r.json(),
            serde_json::json!({
                "target": "web1", "outcome": "error", "error": "bad\nthing", "exit-code": 1
            })
        );
        let r = ErrorReport {
            command: Some("mount"),
            extra: vec![("notes", serde_json::json!(["n"]))],
            ..report()
        };
        let v = r.json();
        let keys: Vec<&str> = v
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut want = [
            "target",
            "command",
            "outcome",
            "error",
            "notes",
            "exit-code",
        ];
        // Without serde_json's preserve_order the map is sorted.
        if keys.first() != Some(&"target") {
            want.sort_unstable();
        }
        assert_eq!(keys, want);
        assert_eq!(v["command"], "mount");
        assert_eq!(v["notes"][0], "n");
    }

    #[test]
    fn text_is_one_line_and_names_the_target_when_asked() {
        let r = report();
        assert!(!r.text().contains('\n'), "{}", r.text());
        assert!(r.text().starts_with("error: bad"), "{}", r.text());
        let r = ErrorReport {
            text_names_target: true,
            ..report()
        };
        assert!(r.text().starts_with("error: web1: bad"), "{}", r.text());
    }
}
