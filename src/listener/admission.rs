//! Who may start an SSH handshake: the pre-authentication admission policy.
//!
//! Pure bookkeeping, no I/O, no clock: the listener asks [`Table::decide`]
//! for every accepted socket and reports progress back. The aim is that a
//! flood of idle, garbage or slow connections cannot keep the admin out:
//!
//! - at most `per_source` unauthenticated connections per source address
//!   (IPv6 counted per /64); a new one from a source at its limit replaces
//!   that source's oldest connection that has not sent its SSH banner yet, so
//!   a source flooding itself cannot lock out a real client on the same
//!   address for long;
//! - when the table is full, a newcomer replaces the oldest banner-less
//!   connection of the source holding the most slots, if that source holds
//!   more than the newcomer's (fair share); a source holding two more than
//!   the newcomer's also loses connections that sent a banner but did not
//!   authenticate yet;
//! - between `start` and `full`, connections from a source that already
//!   holds one are dropped at random, with a probability rising from `rate`
//!   percent to 100 (OpenSSH's `MaxStartups start:rate:full`); a source's
//!   first connection is never dropped at random.
//!
//! Refusals and evictions are counted for one summary log line per interval.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// Limits of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Unauthenticated connections in all.
    pub full: usize,
    /// Random early drop starts here.
    pub start: usize,
    /// Drop probability at `start`, in percent.
    pub rate: u32,
    /// Unauthenticated connections per source.
    pub per_source: usize,
}

impl Policy {
    /// Derived from `[limits] max-unauthenticated`: a quarter of it per
    /// source, random early drop from half-full at 30 %.
    pub fn from_max(max_unauthenticated: u32) -> Self {
        let full = (max_unauthenticated as usize).max(1);
        Policy {
            full,
            start: (full / 2).max(1),
            rate: 30,
            per_source: full.div_ceil(4),
        }
    }
}

/// A source address as the policy counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// IPv4-mapped IPv6 counts as IPv4; other IPv6 per /64, since one host
    /// usually has a whole /64 to pick addresses from.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    let mut masked = [0u16; 8];
                    for (m, seg) in masked.iter_mut().zip(s.iter()).take(4) {
                        *m = *seg;
                    }
                    Source(IpAddr::V6(masked.into()))
                }
            },
        }
    }
}

/// How far a connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepted; no SSH version line yet.
    Fresh,
    /// Sent its version line; key exchange or authentication under way.
    Talking,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerSource,
    Full,
    EarlyDrop,
}

/// The verdict for a new connection. `evicted` is the handle of a
/// connection the caller must now close.
#[derive(Debug)]
pub enum Decision<H> {
    Admit { id: u64, evicted: Option<H> },
    Refuse(Refusal),
}

/// Ways a connection ended before authentication, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No version line within the banner grace time.
    NoBanner,
    /// Not SSH, or the handshake failed.
    Handshake,
    /// Did not authenticate within the login grace time.
    LoginGrace,
    /// Password or keyboard-interactive tried, or a key not listed.
    AuthRefused,
}

struct Entry<H> {
    source: Source,
    stage: Stage,
    handle: H,
}

/// Most distinct sources remembered for one summary line.
const MAX_SOURCES_NOTED: usize = 256;

#[derive(Default)]
struct Stats {
    per_source: u64,
    full: u64,
    early: u64,
    evicted: u64,
    no_banner: u64,
    handshake: u64,
    login_grace: u64,
    auth_refused: u64,
    sources: HashSet<Source>,
}

/// The unauthenticated connections, oldest first.
pub struct Table<H> {
    policy: Policy,
    entries: BTreeMap<u64, Entry<H>>,
    counts: HashMap<Source, usize>,
    next: u64,
    stats: Stats,
}

impl<H> Table<H> {
    pub fn new(policy: Policy) -> Self {
        Table {
            policy,
            entries: BTreeMap::new(),
            counts: HashMap::new(),
            next: 0,
            stats: Stats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn count(&self, s: &Source) -> usize {
        self.counts.get(s).copied().unwrap_or(0)
    }

    fn note_source(&mut self, s: Source) {
        if self.stats.sources.len() < MAX_SOURCES_NOTED {
            self.stats.sources.insert(s);
        }
    }

    /// Decides about a new connection from `source`. `roll` is a random
    /// number in `0..100` for the early drop. On admission `handle` is kept
    /// until [`Table::release`] or until another connection evicts it.
    pub fn decide(&mut self, source: Source, roll: u32, handle: H) -> Decision<H> {
        let mine = self.count(&source);
        let total = self.entries.len();
        let mut victim = None;
        if mine >= self.policy.per_source {
            victim = self.oldest(|e, _| e.source == source && e.stage == Stage::Fresh);
            if victim.is_none() {
                return self.refuse(source, Refusal::PerSource);
            }
        } else if total >= self.policy.full {
            victim = self
                .heaviest(|e, n| e.stage == Stage::Fresh && n > mine)
                .or_else(|| self.heaviest(|_, n| n > mine + 1));
            if victim.is_none() {
                return self.refuse(source, Refusal::Full);
            }
        } else if total >= self.policy.start && mine > 0 {
            let span = (self.policy.full.saturating_sub(self.policy.start)).max(1) as u64;
            let over = (total - self.policy.start) as u64;
            let rate = u64::from(self.policy.rate.min(100));
            let p = rate + (100 - rate) * over / span;
            if u64::from(roll) < p {
                return self.refuse(source, Refusal::EarlyDrop);
            }
        }
        let evicted = victim.and_then(|id| self.remove(id)).map(|e| {
            self.stats.evicted += 1;
            self.note_source(e.source);
            e.handle
        });
        let id = self.next;
        self.next += 1;
        self.entries.insert(
            id,
            Entry {
                source,
                stage: Stage::Fresh,
                handle,
            },
        );
        *self.counts.entry(source).or_insert(0) += 1;
        Decision::Admit { id, evicted }
    }

    fn refuse(&mut self, source: Source, why: Refusal) -> Decision<H> {
        match why {
            Refusal::PerSource => self.stats.per_source += 1,
            Refusal::Full => self.stats.full += 1,
            Refusal::EarlyDrop => self.stats.early += 1,
        }
        self.note_source(source);
        Decision::Refuse(why)
    }

    /// Oldest entry matching `f(entry, its source's count)`.
    fn oldest(&self, f: impl Fn(&Entry<H>, usize) -> bool) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| f(e, self.count(&e.source)))
            .map(|(id, _)| *id)
    }

    /// Among entries matching `f`, the oldest of the source with most slots.
    fn heaviest(&self, f: impl Fn(&Entry<H>, usize) -> bool) -> Option<u64> {
        let mut best: Option<(usize, u64)> = None;
        for (id, e) in &self.entries {
            let n = self.count(&e.source);
            if f(e, n) && best.is_none_or(|(bn, _)| n > bn) {
                best = Some((n, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry<H>> {
        let e = self.entries.remove(&id)?;
        if let Some(n) = self.counts.get_mut(&e.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.counts.remove(&e.source);
            }
        }
        Some(e)
    }

    /// The connection sent its version line.
    pub fn talking(&mut self, id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.stage = Stage::Talking;
        }
    }

    /// The connection authenticated or ended: it no longer counts. Returns
    /// its handle if it was still in the table.
    pub fn release(&mut self, id: u64) -> Option<H> {
        self.remove(id).map(|e| e.handle)
    }

    /// Counts a connection that ended before authentication.
    pub fn ended(&mut self, why: Ended, source: Source) {
        match why {
            Ended::NoBanner => self.stats.no_banner += 1,
            Ended::Handshake => self.stats.handshake += 1,
            Ended::LoginGrace => self.stats.login_grace += 1,
            Ended::AuthRefused => self.stats.auth_refused += 1,
        }
        self.note_source(source);
    }

    /// One line about everything refused or dropped since the last call,
    /// or `None` when nothing was.
    pub fn take_summary(&mut self) -> Option<String> {
        let s = std::mem::take(&mut self.stats);
        let parts: Vec<String> = [
            (s.per_source, "refused: per-source limit"),
            (s.full, "refused: table full"),
            (s.early, "refused: random early drop"),
            (s.evicted, "replaced by newer connections"),
            (s.no_banner, "no SSH banner in time"),
            (s.handshake, "not SSH, failed handshake or left"),
            (s.login_grace, "login grace time over"),
            (s.auth_refused, "authentication refused"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            return None;
        }
        let sources = if s.sources.len() >= MAX_SOURCES_NOTED {
            format!("{MAX_SOURCES_NOTED}+")
        } else {
            s.sources.len().to_string()
        };
        Some(format!(
            "unauthenticated connections: {} (from {sources} source addresses); {} now pending",
            parts.join(", "),
            self.entries.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn src(last: u8) -> Source {
        Source::of(IpAddr::from([127, 0, 0, last]))
    }

    fn policy() -> Policy {
        Policy {
            full: 8,
            start: 4,
            rate: 30,
            per_source: 4,
        }
    }

    fn admit<H: std::fmt::Debug>(t: &mut Table<H>, s: Source, h: H) -> (u64, Option<H>) {
        match t.decide(s, 99, h) {
            Decision::Admit { id, evicted } => (id, evicted),
            d => panic!("refused: {d:?}"),
        }
    }

    #[test]
    fn policy_from_config() {
        let p = Policy::from_max(64);
        assert_eq!((p.full, p.start, p.per_source), (64, 32, 16));
        let p = Policy::from_max(1);
        assert_eq!((p.full, p.start, p.per_source), (1, 1, 1));
    }

    #[test]
    fn sources_group_ipv6_by_64_and_unmap_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), src(1));
    }

    #[test]
    fn a_flood_from_other_sources_cannot_keep_a_newcomer_out() {
        let mut t = Table::new(policy());
        // Eight idle connections from two attacker sources fill the table.
        for i in 0..8 {
            admit(&mut t, src(2 + (i % 2) as u8), i);
        }
        assert_eq!(t.len(), 8);
        // The admin gets in, replacing the oldest idle one.
        let (admin, ev) = admit(&mut t, src(1), 100);
        assert_eq!(ev, Some(0));
        t.talking(admin);
        // More flood: replaces flood, never the admin who sent a banner.
        for i in 0..50 {
            let (_, ev) = admit(&mut t, src(2 + (i % 2) as u8), 200 + i);
            assert_ne!(ev, Some(100));
        }
        assert_eq!(t.release(admin), Some(100));
    }

    #[test]
    fn full_table_of_one_slot_each_lets_a_new_source_replace_but_not_a_talking_peer() {
        let mut t = Table::new(Policy {
            full: 2,
            start: 2,
            rate: 30,
            per_source: 2,
        });
        let (a, _) = admit(&mut t, src(2), 'a');
        let (b, _) = admit(&mut t, src(3), 'b');
        t.talking(a);
        t.talking(b);
        // Equal shares and every slot talking: refused, and told so.
        assert!(matches!(
            t.decide(src(4), 0, 'c'),
            Decision::Refuse(Refusal::Full)
        ));
        t.release(a);
        admit(&mut t, src(4), 'c');
        let line = t.take_summary().unwrap();
        assert!(line.contains("1 refused: table full"), "{line}");
        assert_eq!(t.take_summary(), None, "counters reset after a summary");
    }

    #[test]
    fn a_source_at_its_limit_replaces_its_own_oldest_idle_connection() {
        let mut t = Table::new(policy());
        for i in 0..4 {
            admit(&mut t, src(1), i);
        }
        let (_, ev) = admit(&mut t, src(1), 4);
        assert_eq!(ev, Some(0));
        // All talking (a real handshake stalling): now the source is refused.
        for id in 1..=4 {
            t.talking(id);
        }
        assert!(matches!(
            t.decide(src(1), 99, 5),
            Decision::Refuse(Refusal::PerSource)
        ));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn random_early_drop_spares_a_sources_first_connection() {
        let mut t = Table::new(policy());
        for i in 0..4 {
            admit(&mut t, src(2 + i as u8), i);
        }
        // At start (4 of 8): 30 % drop for a repeat source.
        assert!(matches!(
            t.decide(src(2), 29, 9),
            Decision::Refuse(Refusal::EarlyDrop)
        ));
        assert!(matches!(t.decide(src(2), 30, 9), Decision::Admit { .. }));
        // 5 of 8: 30 + 70 * 1/4 = 47 %.
        assert!(matches!(
            t.decide(src(3), 46, 9),
            Decision::Refuse(Refusal::EarlyDrop)
        ));
        // A new source is never dropped at random.
        assert!(matches!(t.decide(src(9), 0, 9), Decision::Admit { .. }));
        let line = t.take_summary().unwrap();
        assert!(line.contains("2 refused: random early drop"), "{line}");
    }

    #[test]
    fn release_and_counts_stay_consistent() {
        let mut t = Table::new(policy());
        let (a, _) = admit(&mut t, src(1), 1);
        assert_eq!(t.release(a), Some(1));
        assert_eq!(t.release(a), None);
        assert!(t.is_empty());
        assert!(t.counts.is_empty());
        t.ended(Ended::NoBanner, src(5));
        assert!(t
            .take_summary()
            .unwrap()
            .contains("1 no SSH banner in time"));
    }
}
