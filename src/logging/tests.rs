//! Our subscriber against tracing-subscriber's `fmt` layer, set up exactly
//! as `logging::init` set it up before (a dev-dependency now): the same
//! events under the same `PORTCULLIS_LOG` values must give the same bytes
//! and the same kernel-log priorities. Then the hostile cases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::subscriber::LineSubscriber;
use super::{filter, kmsg_record, priority};
use std::error::Error;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Records as the kernel log would get them: priority and line.
type Lines = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

fn ours(value: Option<&str>, verbose: bool, f: impl FnOnce()) -> Vec<(u8, Vec<u8>)> {
    let lines = Lines::default();
    let sink = lines.clone();
    let sub = LineSubscriber::new(
        filter(value, verbose),
        Box::new(move |level, line| sink.lock().unwrap().push((priority(level), line.to_vec()))),
    );
    tracing::subscriber::with_default(sub, f);
    let out = lines.lock().unwrap().clone();
    out
}

/// The writer of the old `logging.rs`: one buffer per event, handed on
/// when `fmt` drops it.
#[derive(Clone)]
struct OldTee(Lines);

struct OldWriter {
    lines: Lines,
    priority: u8,
    line: Vec<u8>,
}

impl Write for OldWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for OldWriter {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.lines.lock().unwrap().push((self.priority, line));
    }
}

impl<'a> MakeWriter<'a> for OldTee {
    type Writer = OldWriter;
    fn make_writer(&'a self) -> OldWriter {
        OldWriter {
            lines: self.0.clone(),
            priority: 6,
            line: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> OldWriter {
        OldWriter {
            lines: self.0.clone(),
            priority: priority(meta.level()),
            line: Vec::new(),
        }
    }
}

/// The old `init`, with the writer above instead of stderr and kmsg.
fn theirs(value: Option<&str>, verbose: bool, f: impl FnOnce()) -> Vec<(u8, Vec<u8>)> {
    let lines = Lines::default();
    let default = if verbose { "debug" } else { "info" };
    let filter: Targets = value.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        format!("{default},russh=warn")
            .parse()
            .unwrap_or_else(|_| Targets::new().with_default(Level::INFO))
    });
    let sub = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(OldTee(lines.clone()))
                .with_ansi(false)
                .without_time()
                .with_target(false),
        )
        .with(filter);
    tracing::subscriber::with_default(sub, f);
    let out = lines.lock().unwrap().clone();
    out
}

#[derive(Debug)]
struct Leaf;
impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("leaf \x1b[31mred\x1b[0m\nnext line")
    }
}
impl Error for Leaf {}

#[derive(Debug)]
struct Top(Leaf);
impl fmt::Display for Top {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("top")
    }
}
impl Error for Top {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// A value whose `Debug` fails: `fmt` dropped such an event.
struct Broken;
impl fmt::Debug for Broken {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Err(fmt::Error)
    }
}

/// The forms the code uses: `#[instrument(skip_all)]` and
/// `fields(volume = %…)`, on async and plain functions.
#[tracing::instrument(skip_all, fields(volume = %name))]
async fn open_volume(name: &str) {
    tracing::info!(device = "/dev/vda2", "opening");
    tokio::task::yield_now().await;
    inner_step(3);
    tracing::warn!("after the yield");
}

#[tracing::instrument(skip_all)]
fn inner_step(n: u32) {
    tracing::debug!(n, "step");
}

/// Every kind of event and span the two must agree on.
fn battery() {
    tracing::error!("an error");
    tracing::warn!("a warning");
    tracing::info!("plain");
    tracing::debug!("a debug");
    tracing::trace!("a trace");
    tracing::info!(
        n = 5,
        neg = -3i64,
        big = u128::MAX,
        small = i128::MIN,
        yes = true,
        f = 1.5f64,
        tiny = 0.1f64,
        nan = f64::NAN,
        // Within float.rs's decimal range; beyond it, it writes exact hex.
        huge = 1e22f64,
        small_f = 2.5e-7f64,
        neg_zero = -0.0f64,
        "numbers {}",
        7
    );
    tracing::info!(
        s = "quoted \"str\"\n\t\x1b[31m\u{85}é",
        d = %"display \n\x1b[0m raw",
        q = ?Some("x"),
        "fields"
    );
    tracing::info!(r#type = "raw ident", a.b = 1, "dotted");
    tracing::info!("r#quoted" = 1, "a field name spelled with r#");
    tracing::info!(only = 1);
    tracing::info!(message = "message as a field", after = 2);
    tracing::warn!(
        "multi\nline\r\n\tmessage \x1b[2J\x07\x08\x0c\x7f\u{80}\u{9b}\u{9f}\u{a0}\u{1} end"
    );
    let top = Top(Leaf);
    tracing::error!(error = &top as &(dyn Error + 'static), "failed");
    tracing::error!(error = &Leaf as &(dyn Error + 'static));
    tracing::error!(error = %top, "as display");
    tracing::info!(bad = ?Broken, "dropped");
    tracing::info!(bytes = &b"\x00\xffab"[..], "bytes");
    tracing::info!(target: "russh::session", "russh info");
    tracing::warn!(target: "russh::session", "russh warn");
    tracing::debug!(target: "portcullis::unlock", "unlock debug");
    tracing::trace!(target: "portcullisd::run", "daemon trace");
    tracing::info!(target: "special", special = 1, "with the field");
    tracing::info!(target: "special", "without the field");
    tracing::debug!(target: "special", special = 2, "debug with the field");
    tracing::debug!(target: "special", "debug without the field");

    let outer = tracing::info_span!("outer", volume = "root", n = 2);
    let guard = outer.enter();
    tracing::info!("in outer");
    let inner = tracing::debug_span!("inner");
    inner.in_scope(|| {
        tracing::info!("in inner");
        outer.in_scope(|| tracing::info!("outer again"));
    });
    let late = tracing::info_span!("late", v = tracing::field::Empty, w = 1);
    late.record("v", "set later");
    late.in_scope(|| tracing::info!("after a record"));
    late.record("w", 2);
    late.in_scope(|| tracing::info!("after another"));
    tracing::info!(parent: &inner, "explicit parent");
    tracing::info!(parent: None, "root event");
    let child = tracing::info_span!("child");
    drop(guard);
    tracing::info!("outside");
    let other = tracing::info_span!("other", k = %"v");
    other.in_scope(|| child.in_scope(|| tracing::info!("child entered in other")));
    let a = tracing::info_span!("a");
    let b = a.clone();
    a.in_scope(|| b.in_scope(|| tracing::info!("entered twice")));
    a.in_scope(|| tracing::info!("once more"));
    let russh = tracing::info_span!(target: "russh::x", "russh_span");
    russh.in_scope(|| tracing::warn!("inside a russh span"));
    let sp = tracing::info_span!(target: "special", "sp", special = 1);
    sp.in_scope(|| tracing::info!("inside a span with the field"));
    let sp2 = tracing::debug_span!(target: "special", "sp2");
    sp2.in_scope(|| tracing::info!("inside a span without the field"));
    drop((outer, inner, late, child, other));

    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(open_volume("root"));
    inner_step(1);
}

/// `PORTCULLIS_LOG` values, good, odd and malformed.
const VALUES: &[Option<&str>] = &[
    None,
    Some(""),
    Some("info"),
    Some("debug"),
    Some("trace"),
    Some("off"),
    Some("error"),
    Some("WARN"),
    Some("3"),
    Some("9"),
    Some("info,portcullis=trace"),
    Some("warn,portcullis::unlock=debug,portcullis=error"),
    Some("info,russh=warn"),
    Some("russh"),
    Some("portcullis"),
    Some("info,"),
    Some(","),
    Some("a=b=c"),
    Some("=debug"),
    Some("info,=debug"),
    Some("portcullis=bogus"),
    Some(" info"),
    Some("info, russh=debug"),
    Some("info,special[{special}]=trace"),
    Some("warn,special[{special}]=info,sp=trace"),
    Some("special[{}]=trace"),
    Some("x[{a}=trace"),
    Some("x[{a}][{b}]=trace"),
    Some("trace,debug"),
    Some("debug,trace"),
    Some("info,portcullis=off"),
    Some("outer=info"),
    Some("\u{0}\u{ffff}=="),
];

#[test]
fn same_lines_as_tracing_subscriber_for_every_value() {
    for value in VALUES {
        for verbose in [false, true] {
            let want = theirs(*value, verbose, battery);
            let got = ours(*value, verbose, battery);
            let show = |v: &[(u8, Vec<u8>)]| {
                v.iter()
                    .map(|(p, l)| format!("<{p}>{}", String::from_utf8_lossy(l)))
                    .collect::<String>()
            };
            assert_eq!(
                show(&got),
                show(&want),
                "PORTCULLIS_LOG={value:?} verbose={verbose}"
            );
        }
    }
}

/// The comparison above means something only if it saw all of this.
#[test]
fn the_battery_covers_spans_fields_and_levels() {
    let all = ours(Some("trace"), false, battery);
    let text: String = all
        .iter()
        .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
        .collect();
    for want in [
        "ERROR an error\n",
        " WARN a warning\n",
        " INFO plain\n",
        "DEBUG a debug\n",
        "TRACE a trace\n",
        " INFO outer{volume=\"root\" n=2}: in outer\n",
        " INFO outer{volume=\"root\" n=2}:inner: in inner\n",
        " INFO outer{volume=\"root\" n=2}:late{w=1 v=\"set later\" w=2}: after another\n",
        " INFO root event\n",
        " INFO outer{volume=\"root\" n=2}:child: child entered in other\n",
        " INFO a: entered twice\n",
        " INFO open_volume{volume=root}: opening device=\"/dev/vda2\"\n",
        "DEBUG open_volume{volume=root}:inner_step: step n=3\n",
        " WARN open_volume{volume=root}: after the yield\n",
        "DEBUG inner_step: step n=1\n",
        " INFO fields s=\"quoted \\\"str\\\"\\n\\t\\u{1b}[31m\\u{85}é\" d=display \n\x1b[0m raw q=Some(\"x\")\n",
        " INFO dotted type=\"raw ident\" a.b=1\n",
        " INFO message as a field after=2\n",
        " INFO only=1\n",
        "ERROR failed error=top error.sources=[leaf \\x1b[31mred\\x1b[0m\nnext line]\n",
        " WARN multi\nline\r\n\tmessage \\x1b[2J\\x07\\x08\\x0c\\x7f\\u{80}\\u{9b}\\u{9f}\u{a0}\u{1} end\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("dropped"), "{text}");
    let prio = |p: u8| all.iter().filter(|(q, _)| *q == p).count();
    assert!(prio(3) > 0 && prio(4) > 0 && prio(6) > 0 && prio(7) > 0);
}

#[test]
fn the_standard_filter_is_info_with_russh_at_warn() {
    let text = |v: Option<&str>, verbose| {
        ours(v, verbose, battery)
            .into_iter()
            .map(|(_, l)| String::from_utf8_lossy(&l).into_owned())
            .collect::<String>()
    };
    let normal = text(None, false);
    assert!(normal.contains(" INFO plain\n") && !normal.contains("a debug"));
    assert!(normal.contains("russh warn") && !normal.contains("russh info"));
    let verbose = text(None, true);
    assert!(verbose.contains("DEBUG a debug\n") && !verbose.contains("a trace"));
    assert!(!verbose.contains("russh info"));
    // Garbage falls back to the standard filter, verbose or not.
    for garbage in ["a=b=c", "x[{a}=trace", "portcullis=bogus", "\u{0}=="] {
        assert_eq!(text(Some(garbage), false), normal, "{garbage:?}");
        assert_eq!(text(Some(garbage), true), verbose, "{garbage:?}");
    }
    // The most specific target wins, in any order.
    for v in [
        "error,portcullis::unlock=debug,portcullis=warn",
        "portcullis=warn,error,portcullis::unlock=debug",
    ] {
        let t = text(Some(v), false);
        assert!(
            t.contains("unlock debug") && !t.contains("daemon trace"),
            "{v}: {t}"
        );
        assert!(!t.contains("plain"), "{v}: {t}");
    }
}

/// A long-running listener must not keep closed spans: every span of the
/// battery (nested, entered twice, parents held by children) is freed.
#[test]
fn closed_spans_are_freed() {
    let sub = LineSubscriber::new(filter(Some("trace"), false), Box::new(|_, _| {}));
    let dispatch = tracing::Dispatch::new(sub);
    let open = || {
        dispatch
            .downcast_ref::<LineSubscriber>()
            .unwrap()
            .open_spans()
    };
    tracing::dispatcher::with_default(&dispatch, || {
        let outer = tracing::info_span!("outer");
        let child = outer.in_scope(|| tracing::info_span!("child"));
        drop(outer);
        // The child holds its parent.
        assert_eq!(open(), 2);
        drop(child);
        battery();
    });
    assert_eq!(open(), 0);
}

#[test]
fn kmsg_records_carry_the_priority_and_the_name() {
    assert_eq!(
        kmsg_record(priority(&Level::ERROR), b"ERROR boom\n"),
        b"<3>portcullisd: ERROR boom\n"
    );
    assert_eq!(priority(&Level::WARN), 4);
    assert_eq!(priority(&Level::INFO), 6);
    assert_eq!(priority(&Level::DEBUG), 7);
    assert_eq!(priority(&Level::TRACE), 7);
}

/// The kernel refuses a /dev/kmsg write over its limit whole: a long line
/// is cut to fit, on a character boundary, and says so. At the limit it
/// passes untouched.
#[test]
fn long_kmsg_records_are_cut_to_what_the_kernel_takes() {
    let head = b"<6>portcullisd: ".len();
    let exact = vec![b'a'; super::KMSG_MAX - head];
    assert_eq!(kmsg_record(6, &exact).len(), super::KMSG_MAX);
    assert!(kmsg_record(6, &exact).ends_with(&exact));
    for pad in 0..4 {
        // "é" is two bytes and "€" three: every cut point lands in one.
        let line = format!("{}{} end\n", "x".repeat(pad), "é€".repeat(400));
        let rec = kmsg_record(3, line.as_bytes());
        assert!(rec.len() <= super::KMSG_MAX, "{} bytes", rec.len());
        let text = String::from_utf8(rec).expect("cut inside a character");
        assert!(text.starts_with("<3>portcullisd: "), "{text}");
        assert!(
            text.ends_with(" [cut: the whole line is on stderr]\n"),
            "{text}"
        );
        assert!(
            text.len() > super::KMSG_MAX - 8,
            "cut too short: {}",
            text.len()
        );
    }
}

/// A newline in the message (or a `%display` field) is written as is, as
/// `fmt` did: text from a client could forge a second line there, which is
/// why the listener escapes such text (`listener::shown`) or logs it as
/// `?value`. Terminal escapes are spelled out in the message either way.
#[test]
fn newlines_pass_in_messages_and_are_escaped_in_debug_fields() {
    let forged = "root\n INFO unlocked: root\x1b[2K";
    let got = ours(None, false, || {
        tracing::warn!("{forged}");
        tracing::warn!(user = forged, "refused");
        tracing::warn!(user = ?forged, "refused");
    });
    let got: Vec<String> = got
        .into_iter()
        .map(|(_, l)| String::from_utf8(l).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            " WARN root\n INFO unlocked: root\\x1b[2K\n",
            " WARN refused user=\"root\\n INFO unlocked: root\\u{1b}[2K\"\n",
            " WARN refused user=\"root\\n INFO unlocked: root\\u{1b}[2K\"\n",
        ]
    );
}

#[test]
fn a_megabyte_message_is_one_line() {
    let big = "x".repeat(1 << 20);
    let got = ours(None, false, || tracing::info!("{big}"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), " INFO ".len() + (1 << 20) + 1);
    assert_eq!(got, theirs(None, false, || tracing::info!("{big}")));
}

/// Spans are per thread: each worker's lines carry its own span, whole.
#[test]
fn threads_keep_their_own_spans_and_whole_lines() {
    let lines = Lines::default();
    let sink = lines.clone();
    let sub = LineSubscriber::new(
        filter(None, false),
        Box::new(move |level, line| sink.lock().unwrap().push((priority(level), line.to_vec()))),
    );
    let dispatch = tracing::Dispatch::new(sub);
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let d = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&d, || {
                    let span = tracing::info_span!("worker", i);
                    let _g = span.enter();
                    for j in 0..200 {
                        tracing::info!(j, "tick {}", "y".repeat(j * 50));
                    }
                })
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 8 * 200);
    let mut seen = [0usize; 8];
    for (_, l) in lines.iter() {
        let l = String::from_utf8(l.clone()).unwrap();
        let rest = l.strip_prefix(" INFO worker{i=").unwrap();
        let (i, rest) = rest.split_once("}: tick ").unwrap();
        let i: usize = i.parse().unwrap();
        let (ys, j) = rest.split_once(" j=").unwrap();
        let j: usize = j.strip_suffix('\n').unwrap().parse().unwrap();
        assert_eq!(ys, "y".repeat(j * 50));
        seen[i] += 1;
    }
    assert_eq!(seen, [200; 8]);
}

/// The real sink on a real stderr pipe: a child process (this test binary
/// again) logs long lines from eight threads; none may be cut by another.
#[test]
fn stderr_lines_from_threads_do_not_mix() {
    if std::env::var_os("PORTCULLIS_LOGGING_CHILD").is_some() {
        let sub = LineSubscriber::new(filter(None, false), super::sink(None));
        let dispatch = tracing::Dispatch::new(sub);
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let d = dispatch.clone();
                std::thread::spawn(move || {
                    tracing::dispatcher::with_default(&d, || {
                        for j in 0..50 {
                            let body = char::from(b'a' + i).to_string().repeat(70_000);
                            tracing::info!(i, j, "{body}");
                        }
                    })
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logging::tests::stderr_lines_from_threads_do_not_mix",
            "--test-threads=1",
        ])
        .env("PORTCULLIS_LOGGING_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with(" INFO ")).collect();
    assert_eq!(ours.len(), 8 * 50);
    for l in ours {
        let body = l.strip_prefix(" INFO ").unwrap();
        let c = body.chars().next().unwrap();
        let want = format!("{} i={} j=", c.to_string().repeat(70_000), c as u8 - b'a');
        assert!(body.starts_with(&want), "a line was cut: {}…", &l[..80]);
    }
}
