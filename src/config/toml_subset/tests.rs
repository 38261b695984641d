//! The subset reader held to the `toml` crate: on every document both
//! accept, the same value tree; every document `toml` refuses, refused here
//! too; a document using a construct outside the subset refused with a
//! one-line "not supported" message. Hand-picked documents cover each
//! construct and each rule; a small deterministic generator adds thousands
//! more, valid and broken.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;

/// Our tree in `toml`'s terms, to compare.
pub(crate) fn to_toml(t: &Table) -> toml::Value {
    toml::Value::Table(
        t.entries
            .iter()
            .map(|(k, n)| (k.clone(), value_to_toml(&n.value)))
            .collect(),
    )
}

fn value_to_toml(v: &Value) -> toml::Value {
    match v {
        Value::Str(s) => toml::Value::String(s.clone()),
        Value::Int(n) => toml::Value::Integer(*n),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Array(items) => {
            toml::Value::Array(items.iter().map(|n| value_to_toml(&n.value)).collect())
        }
        Value::Table(t) => to_toml(t),
        Value::Tables(ts) => toml::Value::Array(ts.iter().map(to_toml).collect()),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Both accept, with the same tree.
    Same,
    /// Both refuse.
    Refused,
    /// `toml` accepts a construct we do not support, and we say so.
    Unsupported,
}

/// Compares the two readers on `doc`; panics on any disagreement.
fn differ(doc: &str) -> Outcome {
    let theirs = toml::from_str::<toml::Table>(doc);
    let ours = parse(doc);
    if let Err(e) = &ours {
        let shown = e.to_string();
        assert!(
            !shown.contains('\n') && shown.len() < 600,
            "not one short line: {shown:?}\n for {doc:?}"
        );
        assert!(e.line >= 1, "line 0 in {shown:?} for {doc:?}");
    }
    match (theirs, ours) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                toml::Value::Table(a),
                to_toml(&b),
                "different trees for {doc:?}"
            );
            Outcome::Same
        }
        (Err(_), Err(_)) => Outcome::Refused,
        (Err(a), Ok(b)) => panic!("toml refuses {doc:?} ({a}) but we read {b:?}"),
        (Ok(a), Err(b)) => {
            assert!(
                b.msg.contains("not supported"),
                "toml reads {doc:?} as {a:?} but we refuse it: {b}"
            );
            Outcome::Unsupported
        }
    }
}

/// Documents in the subset: both readers agree on the tree.
const VALID: &[&str] = &[
    "",
    "\n\n",
    "# only a comment\n",
    "a = 1",
    "a = 1\n",
    "a = 1 # trailing comment\n",
    "  a   =   1  \n",
    "\ta\t=\t1\t\n",
    "a = 1\r\nb = 2\r\n",
    "\u{feff}a = 1\n",
    "bare-key_1 = true\nfalse-y = false\n",
    "1234 = 1\n",
    "\"quoted key\" = 1\n'literal key' = 2\n",
    "\"\" = 1\n",
    "\"a.b\" = 1\n",
    "a.b = 1\na.c = 2\n",
    "a . b . c = 1\n",
    "a.\"b c\".'d' = 1\n",
    "limits.auth-attempts = 3\nlimits.max-sessions = 4\n",
    "s = \"\"\n",
    "s = ''\n",
    "s = \"plain\"\n",
    "s = \"tab\\there\"\n",
    "s = \"esc \\b \\t \\n \\f \\r \\\" \\\\ end\"\n",
    "s = \"\\u00e9 \\U0001F600 \\u0000\"\n",
    "s = \"\\uD7FF \\uE000 \\U0010FFFF\"\n",
    "s = \"raw\ttab\"\n",
    "s = 'C:\\path\\no escapes \"x\"'\n",
    "s = \"unicode é ☃ 😀\"\n",
    "s = \"#not a comment\"\n",
    "n = 0\nm = +0\no = -0\n",
    "n = 42\nm = +17\no = -17\n",
    "n = 1_000\nm = 5_349_221\no = 1_2_3_4_5\n",
    "n = 9223372036854775807\nm = -9223372036854775808\n",
    "b = true\nc = false\n",
    "a = []\n",
    "a = [ ]\n",
    "a = [1]\n",
    "a = [1,]\n",
    "a = [1, 2, 3]\n",
    "a = [\"x\", 'y', 1, true]\n",
    "a = [[1, 2], [\"a\"], []]\n",
    "a = [\n  1,\n  2, # two\n  # a comment line\n  3,\n]\n",
    "a = [ # open\n]\n",
    "a = [\r\n1,\r\n2\r\n]\r\n",
    "a = [[[[[[[[1]]]]]]]]\n",
    "[t]\n",
    "[t]\na = 1\n",
    "[ t ]\n",
    "[t] # comment\na = 1\n",
    "[\"quoted t\"]\na = 1\n",
    "[a.b.c]\nd = 1\n",
    "[ a . \"b\" . 'c' ]\n",
    "[a.b]\n[a]\nc = 1\n",
    "[a]\n[a.b]\n",
    "[a]\nx = 1\n[b]\nx = 2\n",
    "x = 1\n[a]\nx = 2\n",
    "[[v]]\n",
    "[[v]]\nname = 1\n[[v]]\nname = 2\n",
    "[[ v ]]\nn = 1\n",
    "[[v]]\na = 1\n[v.sub]\nb = 2\n[[v]]\na = 3\n",
    "[[v]]\n[[v.w]]\nx = 1\n[[v.w]]\nx = 2\n[[v]]\n[[v.w]]\nx = 3\n",
    "[[a.b]]\nx = 1\n[[a.b]]\nx = 2\n",
    "[a]\nb.c = 1\nb.d = 2\n",
    "[fruit]\napple.color = \"red\"\napple.taste.sweet = true\n[fruit.apple.texture]\nsmooth = true\n",
    "[[volume]]\nname = \"root\"\ndevice = \"UUID=abcd\"\n[[volume]]\nname = \"swap\"\ndevice = '/dev/vda3'\n",
    "[limits]\nauth-attempts = 3\n[relay]\nhost = \"192.0.2.7\"\n",
    "a = 1 #\n",
    "a = 1 #\ttab in a comment\n",
    "# comment é ☃\n",
    "a = 1\n\n\n# end",
];

/// Documents TOML itself refuses: refused here too.
const INVALID: &[&str] = &[
    "a",
    "a =",
    "a = \n",
    "= 1\n",
    "a = 1 b = 2\n",
    "a = 1\na = 2\n",
    "a = 1\n\"a\" = 2\n",
    "a.b = 1\na.b = 2\n",
    "a = 1\na.b = 2\n",
    "a.b = 1\na = 2\n",
    "a b = 1\n",
    "a.=1\n",
    ".a=1\n",
    "a..b=1\n",
    "ä = 1\n",
    "a = \"unterminated\n",
    "a = \"unterminated",
    "a = 'unterminated\n",
    "a = \"bad \\x escape\"\n",
    "a = \"bad \\a escape\"\n",
    "a = \"bad \\e escape\"\n",
    "a = \"short \\u12\"\n",
    "a = \"short \\U0001F60\"\n",
    "a = \"lone surrogate \\uD800\"\n",
    "a = \"lone surrogate \\uDFFF\"\n",
    "a = \"too large \\U00110000\"\n",
    "a = \"too large \\UFFFFFFFF\"\n",
    "a = \"nul \0 inside\"\n",
    "a = \"bell \u{7} inside\"\n",
    "a = \"del \u{7f} inside\"\n",
    "a = 'nul \0 inside'\n",
    "a = \"cr \r inside\"\n",
    "# comment with nul \0\n",
    "# comment with del \u{7f}\n",
    "a = 1\rb = 2\n",
    "a = 1\r",
    "\0 = 1\n",
    "a = 01\n",
    "a = 00\n",
    "a = -01\n",
    "a = 1__0\n",
    "a = _1\n",
    "a = 1_\n",
    "a = +-1\n",
    "a = ++1\n",
    "a = 9223372036854775808\n",
    "a = -9223372036854775809\n",
    "a = 99999999999999999999999999\n",
    "a = True\n",
    "a = yes\n",
    "a = truee\n",
    "a = bare\n",
    "a = [1 2]\n",
    "a = [1,,2]\n",
    "a = [,]\n",
    "a = [,1]\n",
    "a = [1\n",
    "a = [\n1,\n",
    "a = [1]]\n",
    "a = ]\n",
    "[t\n",
    "[t]]\n",
    "[[t]\n",
    "[[t] ]\n",
    "[ [t] ]\n",
    "[]\n",
    "[t]\n[t]\n",
    "[t]\na = 1\n[t]\nb = 2\n",
    "[a.b]\n[a.b]\n",
    "[[t]]\n[t]\n",
    "[t]\n[[t]]\n",
    "a = 1\n[a]\n",
    "a = []\n[[a]]\n",
    "a = 1\n[a.b]\n",
    "a.b = 1\n[a]\n",
    "a.b.c = 1\n[a.b]\n",
    "[a]\nb.c = 1\n[a.b]\n",
    "[fruit]\napple.color = \"red\"\n[fruit.apple]\n",
    "[a.b]\nx = 1\n[a]\nb.y = 2\n",
    "[a]\nb = 1\n[a.b]\n",
    "[a]\nb = 1\n[a.b.c]\n",
    "[t] a = 1\n",
    "a = \"x\" \"y\"\n",
    "a = 1 # ok\nb = \n",
];

/// Documents TOML reads that use a construct outside the subset.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("a = 1.5\n", "floats"),
    ("a = 1e3\n", "floats"),
    ("a = -2E-2\n", "floats"),
    ("a = 6.626e-34\n", "floats"),
    ("a = inf\n", "floats"),
    ("a = -inf\n", "floats"),
    ("a = nan\n", "floats"),
    ("a = +nan\n", "floats"),
    ("a = 1_000.5\n", "floats"),
    ("a = 0xDEADBEEF\n", "hexadecimal"),
    ("a = 0o755\n", "hexadecimal"),
    ("a = 0b1101\n", "hexadecimal"),
    ("a = 1979-05-27\n", "dates"),
    ("a = 07:32:00\n", "dates"),
    ("a = 1979-05-27T07:32:00Z\n", "dates"),
    ("a = 1979-05-27 07:32:00\n", "dates"),
    ("a = 1979-05-27T00:32:00.999999-07:00\n", "dates"),
    ("limits = { auth-attempts = 3 }\n", "inline tables"),
    ("a = [{ x = 1 }]\n", "inline tables"),
    ("a = \"\"\"multi\nline\"\"\"\n", "multi-line strings"),
    ("a = '''multi\nline'''\n", "multi-line strings"),
    ("a = \"\"\"one line\"\"\"\n", "multi-line strings"),
    ("a = [\"\"\"x\"\"\"]\n", "multi-line strings"),
];

#[test]
fn every_construct_agrees_with_the_toml_crate() {
    for doc in VALID {
        assert_eq!(differ(doc), Outcome::Same, "{doc:?}");
    }
    for doc in INVALID {
        assert_eq!(differ(doc), Outcome::Refused, "{doc:?}");
    }
    for (doc, what) in UNSUPPORTED {
        assert_eq!(differ(doc), Outcome::Unsupported, "{doc:?}");
        let e = parse(doc).unwrap_err().to_string();
        assert!(
            e.contains(what) && e.contains("not supported in portcullisd.toml"),
            "{doc:?}: {e}"
        );
    }
}

/// A small deterministic generator (xorshift64*) of documents built from
/// the subset's pieces and TOML's traps, some of them then broken by one
/// byte.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// Keys that often meet again (duplicates, dotted into headers), and
    /// sometimes a fresh one.
    fn key(&mut self) -> String {
        let k = self.pick(&[
            "a", "b", "c", "v", "1", "-", "_", "\"a\"", "'b'", "\"x y\"", "\"\"", "a.b", "a.c",
            "b.a", "a . b", "a.\"b\"", "v.w",
        ]);
        if self.below(2) == 0 {
            // Inside the quotes of a quoted key.
            let n = self.below(1000);
            match k.strip_suffix(['"', '\'']) {
                Some(head) => format!("{head}{n}{}", &k[k.len() - 1..]),
                None => format!("{k}{n}"),
            }
        } else {
            k.to_owned()
        }
    }

    fn int(&mut self) -> String {
        match self.below(6) {
            0 => self
                .pick(&[
                    "0",
                    "-0",
                    "+0",
                    "1",
                    "-1",
                    "+42",
                    "1_000",
                    "01",
                    "1__0",
                    "_1",
                    "1_",
                    "9223372036854775807",
                    "9223372036854775808",
                    "-9223372036854775808",
                    "-9223372036854775809",
                    "+-1",
                    "1-2",
                ])
                .to_owned(),
            _ => {
                let mut s = String::new();
                if self.below(4) == 0 {
                    s.push(if self.below(2) == 0 { '-' } else { '+' });
                }
                for i in 0..1 + self.below(8) {
                    if i > 0 && self.below(5) == 0 {
                        s.push('_');
                    }
                    s.push(char::from(b'0' + self.below(10) as u8));
                }
                s
            }
        }
    }

    fn string(&mut self) -> String {
        const GOOD: &[&str] = &[
            "a",
            "Z",
            " ",
            "é",
            "☃",
            "😀",
            "#",
            "=",
            "[",
            "]",
            ",",
            "\t",
            "\\n",
            "\\t",
            "\\b",
            "\\f",
            "\\r",
            "\\\"",
            "\\\\",
            "\\u00e9",
            "\\u0000",
            "\\uE000",
            "\\U0001F600",
        ];
        const BAD: &[&str] = &[
            "\\uD800",
            "\\uDFFF",
            "\\U00110000",
            "\\x41",
            "\\e",
            "\\u12",
            "'",
            "\u{1}",
            "\u{7f}",
            "\\",
        ];
        let n = self.below(6);
        let body: String = (0..n)
            .map(|_| {
                if self.below(25) == 0 {
                    self.pick(BAD)
                } else {
                    self.pick(GOOD)
                }
            })
            .collect();
        if self.below(3) == 0 {
            format!("'{body}'")
        } else {
            format!("\"{body}\"")
        }
    }

    fn value(&mut self, depth: usize) -> String {
        match self.below(if depth < 3 { 13 } else { 12 }) {
            0..=3 => self.int(),
            4 => self
                .pick(&["true", "false", "true", "false", "True", "yes"])
                .to_owned(),
            5..=9 => self.string(),
            10 => self
                .pick(&[
                    "1.5",
                    "1e3",
                    "inf",
                    "nan",
                    "0x1f",
                    "0o7",
                    "0b1",
                    "1979-05-27",
                    "07:32:00",
                    "{ x = 1 }",
                    "{}",
                    "\"\"\"s\"\"\"",
                    "'''s'''",
                    "bare",
                    "",
                ])
                .to_owned(),
            _ => {
                let n = self.below(4);
                let mut s = String::from("[");
                for i in 0..n {
                    if i > 0 {
                        s.push_str(self.pick(&[", ", ",\n", " , # c\n", "\n,", ",\n\n  "]));
                    }
                    let v = self.value(depth + 1);
                    s.push_str(&v);
                }
                s.push_str(self.pick(&["", ",", " ", "\n", " # c\n", ",", "", ",,"]));
                s.push(']');
                s
            }
        }
    }

    fn line(&mut self) -> String {
        match self.below(10) {
            0 => format!("[{}]", self.key()),
            1 => format!("[[{}]]", self.key()),
            2 => self.pick(&["", "# note", "  # indented", "\t"]).to_owned(),
            _ => {
                let k = self.key();
                let v = self.value(0);
                let tail = self.pick(&["", "", " # c", "\t"]);
                format!("{k} = {v}{tail}")
            }
        }
    }

    fn document(&mut self) -> String {
        let eol = if self.below(5) == 0 { "\r\n" } else { "\n" };
        let n = 1 + self.below(8);
        let mut doc: String = (0..n).map(|_| self.line() + eol).collect();
        if self.below(10) < 3 {
            let at = doc
                .char_indices()
                .map(|(i, _)| i)
                .nth(self.below(doc.chars().count()))
                .unwrap_or(0);
            if self.below(2) == 0 {
                doc.remove(at);
            } else {
                let c = self.pick(&[
                    "\"", "'", "[", "]", "=", ".", "#", "\n", "\r", "\0", ",", " ", "\\",
                ]);
                doc.insert_str(at, c);
            }
        }
        doc
    }
}

#[test]
fn thousands_of_generated_documents_agree_with_the_toml_crate() {
    let mut g = Gen(0x5eed_1234_abcd_0042);
    let (mut same, mut refused, mut unsupported) = (0, 0, 0);
    for _ in 0..8000 {
        match differ(&g.document()) {
            Outcome::Same => same += 1,
            Outcome::Refused => refused += 1,
            Outcome::Unsupported => unsupported += 1,
        }
    }
    // Each kind of outcome well exercised, not just refusals.
    eprintln!("same {same}, refused {refused}, unsupported {unsupported}");
    assert!(
        same > 2000 && refused > 1500 && unsupported > 300,
        "same {same}, refused {refused}, unsupported {unsupported}"
    );
}
/// Hostile input: huge keys and values, deep nesting, odd bytes. Every
/// error is one line under 600 bytes and names the right line.
#[test]
fn hostile_input_gets_short_errors_on_the_right_line() {
    let long = "o".repeat(1 << 20);
    let docs = [
        format!("{long}\n"),
        format!("{long} x = 1\n"),
        format!("a = {long}\n"),
        format!("a = \"{long}"),
        format!("a = '{long}"),
        format!("a = \"{long}\\q\"\n"),
        format!("a = 1{long}\n"),
        format!("a = {}\n", "9".repeat(1 << 20)),
        format!("a = [{}]\n", "1 ".repeat(1 << 19)),
        format!("[{long}\n"),
        format!("[[{long}]\n"),
        format!("[a]\n[\"{long}\"]\n[a]\n"),
        format!("\"{long}\" = 1\n\"{long}\" = 2\n"),
        format!("a = {{ {long} = 1 }}\n"),
        format!("a = 1 # {long}\0\n"),
        "[".repeat(1 << 20),
        format!("a = {}", "[".repeat(1 << 20)),
        format!(
            "a = {}{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        ),
        format!("{} = 1\n", vec!["k"; MAX_DEPTH + 1].join(".")),
        format!("[{}]\n", vec!["k"; 1 << 18].join(".")),
    ];
    for doc in &docs {
        let e = parse(doc).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.len() < 600 && !shown.contains('\n'),
            "{} bytes: {}",
            shown.len(),
            &shown[..shown.len().min(300)]
        );
        assert!(shown.starts_with("line "), "{shown}");
    }
    // Exactly as deep as allowed: read.
    let deep = format!("a = {}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse(&deep).is_ok());

    let line = |doc: &str| parse(doc).unwrap_err().line;
    assert_eq!(line("a = 1\n\nb = \"x\n"), 3);
    assert_eq!(line("a = 1\r\n\r\nb = \"x\r\n"), 3);
    assert_eq!(line("a = [\n 1,\n 2,\n 'x\n]\n"), 4);
    assert_eq!(
        line("a = [\n 1,\n 2,\n"),
        1,
        "an unclosed array: where it opens"
    );
    assert_eq!(line("[t]\nx = 1\n\n[t]\n"), 4);
    assert_eq!(line("a = [ # c\n # c\n 1.5 ]\n"), 3);
    assert_eq!(line("\u{feff}a = 1\nb = 1.5\n"), 2);
    let m = parse("[t]\nx = 1\n\n[t]\n").unwrap_err().to_string();
    assert_eq!(
        m,
        "line 4: [t] is defined twice (first on line 1); merge the two"
    );
    let m = parse("limits = { auth-attempts = 3 }\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        m,
        "line 1: limits = {…}: inline tables are not supported in portcullisd.toml; \
         write [limits] as a table"
    );
}

/// Where each value starts, for the config's messages.
#[test]
fn nodes_carry_their_lines() {
    let t = parse("# c\na = 1\n[t]\nb = [\n  'x',\n  'y',\n]\n[[v]]\n[[v]]\nc.d = 2\n").unwrap();
    assert_eq!(t.entries["a"].line, 2);
    let Value::Table(tt) = &t.entries["t"].value else {
        panic!()
    };
    assert_eq!(tt.line, 3);
    let Value::Array(items) = &tt.entries["b"].value else {
        panic!()
    };
    assert_eq!(items.iter().map(|n| n.line).collect::<Vec<_>>(), [5, 6]);
    let Value::Tables(vs) = &t.entries["v"].value else {
        panic!()
    };
    assert_eq!(vs.iter().map(|v| v.line).collect::<Vec<_>>(), [8, 9]);
    assert_eq!(vs[1].entries["c"].line, 10);
}
