//! An `f64` field as `Debug` writes it, without core's float formatting.
//!
//! tracing's `Visit::record_f64` formats through `Debug` by default, and
//! that alone linked core's shortest-float code (Grisu, Dragon and their
//! tables: about 9 KB zstd of the listener), although no event of ours
//! carries a float. This writes the same text with two float operations
//! and integer printing for every value whose shortest form has at most
//! 15 significant digits, at most 22 digits after the point and at most
//! 22 zeros before it (so in practice every value a log line would carry:
//! 1.5, 0.001, 2.5e-7, 1e20). Any other value (0.1 + 0.2, 1e300) is
//! written exactly in C's hexadecimal form (`0x1.3333333333334p-2`), which
//! loses nothing and is never taken for a decimal.
//!
//! Why the checks are exact: integers below 2^53 and 10^k for k ≤ 22 are
//! exact doubles, and IEEE division and multiplication round correctly,
//! so `n / 10^k == v` holds exactly when the decimal `n`e-`k` reads back
//! as `v`, the property that defines `Debug`'s shortest form.

use std::fmt::{self, Write};

/// The powers of ten that are exact doubles.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Digit strings below this are exact doubles (below 2^53) with room to
/// spare, so rounding the scaled value cannot pick the wrong neighbour.
const LIMIT: f64 = 1e15;

/// Holds an `f64` whose `Debug` is [`write`]'s.
pub(super) struct F64(pub f64);

impl fmt::Debug for F64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write(f, self.0)
    }
}

/// Writes `v` as `{v:?}` does (see the module's note for the exceptions).
pub(super) fn write(out: &mut impl Write, v: f64) -> fmt::Result {
    if v.is_nan() {
        return out.write_str("NaN");
    }
    if v.is_sign_negative() {
        out.write_char('-')?;
    }
    let a = v.abs();
    if a.is_infinite() {
        return out.write_str("inf");
    }
    if a == 0.0 {
        return out.write_str("0.0");
    }
    match shortest(a) {
        Some((n, k)) => decimal(out, a, n, k),
        None => hex(out, a),
    }
}

/// The fewest digits `n` (no trailing zero) and the exponent `k` with
/// `n`e`k` reading back as `a` (finite, positive), when `n` has at most 15
/// digits and |k| ≤ 22; otherwise `None`.
fn shortest(a: f64) -> Option<(u64, i32)> {
    // Fractional digits first, fewest first: 1.5 is 15e-1.
    for (d, p) in (0i32..).zip(POW10) {
        let scaled = a * p;
        if scaled >= LIMIT {
            break;
        }
        let n = scaled.round();
        if n != 0.0 && n / p == a {
            return Some(trim(n as u64, -d));
        }
    }
    // Large values: the most trailing zeros first, so 1e20 is 1e20.
    for (k, p) in (0i32..23).zip(POW10).rev() {
        let n = (a / p).round();
        if n != 0.0 && n < LIMIT && n * p == a {
            return Some(trim(n as u64, k));
        }
    }
    None
}

/// `n`e`k` with `n`'s trailing zeros moved into `k`.
fn trim(mut n: u64, mut k: i32) -> (u64, i32) {
    while n != 0 && n.is_multiple_of(10) {
        n /= 10;
        k += 1;
    }
    (n, k)
}

/// `n`e`k` as `Debug` lays it out: plain from 1e-4 up to 1e16 (always with
/// a fractional part), otherwise as `d.ddde±x`.
fn decimal(out: &mut impl Write, a: f64, n: u64, k: i32) -> fmt::Result {
    let digits = n.to_string();
    let len = digits.len() as i32;
    if !(1e-4..1e16).contains(&a) {
        let (first, rest) = digits.split_at_checked(1).ok_or(fmt::Error)?;
        out.write_str(first)?;
        if !rest.is_empty() {
            write!(out, ".{rest}")?;
        }
        return write!(out, "e{}", k + len - 1);
    }
    if k >= 0 {
        out.write_str(&digits)?;
        zeros(out, k)?;
        return out.write_str(".0");
    }
    let int_len = len + k;
    if int_len > 0 {
        let (int, frac) = digits
            .split_at_checked(int_len as usize)
            .ok_or(fmt::Error)?;
        write!(out, "{int}.{frac}")
    } else {
        out.write_str("0.")?;
        zeros(out, -int_len)?;
        out.write_str(&digits)
    }
}

fn zeros(out: &mut impl Write, n: i32) -> fmt::Result {
    for _ in 0..n {
        out.write_char('0')?;
    }
    Ok(())
}

/// `a` (finite, positive) exactly, as C's `%a` writes it:
/// `0x1.8p+1` is 3, `0x0.0000000000001p-1022` the smallest subnormal.
fn hex(out: &mut impl Write, a: f64) -> fmt::Result {
    let bits = a.to_bits();
    let field = (bits >> 52) as i32;
    let mut frac = bits & ((1 << 52) - 1);
    let (lead, exp) = if field == 0 {
        (0, -1022)
    } else {
        (1, field - 1023)
    };
    write!(out, "0x{lead}")?;
    if frac != 0 {
        let mut width = 13;
        while frac & 0xf == 0 {
            frac >>= 4;
            width -= 1;
        }
        write!(out, ".{frac:0width$x}")?;
    }
    write!(out, "p{exp:+}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn ours(v: f64) -> String {
        format!("{:?}", F64(v))
    }

    fn is_hex(s: &str) -> bool {
        s.trim_start_matches('-').starts_with("0x")
    }

    /// Reads `[-]0x{0,1}[.hhh]p±e` back (the test's own reader).
    fn from_hex(s: &str) -> f64 {
        let (neg, s) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let s = s.strip_prefix("0x").unwrap();
        let (mant, exp) = s.split_once('p').unwrap();
        let (lead, frac) = mant.split_once('.').unwrap_or((mant, ""));
        let mut m = lead.parse::<u64>().unwrap() as f64;
        let mut scale = 1.0 / 16.0;
        for c in frac.chars() {
            m += c.to_digit(16).unwrap() as f64 * scale;
            scale /= 16.0;
        }
        let v = m * 2f64.powi(exp.parse::<i32>().unwrap());
        if neg {
            -v
        } else {
            v
        }
    }

    /// A small deterministic generator (xorshift), so failures repeat.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn special_values_match_debug() {
        for v in [
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.0,
            -1.5,
            0.1,
            0.0001,
            0.00009,
            1e15,
            999_999_999_999_999.0,
            1e16,
            1e22,
            1e-7,
            2.5e-7,
            123.456,
            u32::MAX as f64,
            (1u64 << 40) as f64,
        ] {
            assert_eq!(ours(v), format!("{v:?}"), "{}", v.to_bits());
        }
    }

    #[test]
    fn long_and_far_values_are_exact_hex() {
        for (v, want) in [
            (0.1 + 0.2, "0x1.3333333333334p-2"),
            (1e300, "0x1.7e43c8800759cp+996"),
            (-1e-300, "-0x1.56e1fc2f8f359p-997"),
            (f64::MAX, "0x1.fffffffffffffp+1023"),
            (f64::MIN_POSITIVE, "0x1p-1022"),
            (f64::from_bits(1), "0x0.0000000000001p-1022"),
            (f64::from_bits((1 << 52) - 1), "0x0.fffffffffffffp-1022"),
        ] {
            assert_eq!(ours(v), want);
            assert_eq!(from_hex(want).to_bits(), v.to_bits(), "{want}");
        }
    }

    /// Decimals of up to 15 significant digits over the whole range the
    /// checks cover come out exactly as `Debug` writes them.
    #[test]
    fn short_decimals_match_debug() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let digits = 1 + rng.next() % 15;
            let n = rng.next() % 10u64.pow(digits as u32);
            let k = (rng.next() % 45) as i32 - 22;
            let text = format!("{n}e{k}");
            let v: f64 = text.parse().unwrap();
            let s = ours(v);
            assert!(!is_hex(&s), "{text} came out as {s}");
            assert_eq!(s, format!("{v:?}"), "{text}");
        }
    }

    /// Any double at all: `Debug`'s text, or hex that reads back exactly.
    #[test]
    fn every_double_is_debug_or_exact_hex() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut decimal = 0;
        for i in 0..300_000u32 {
            let v = match i % 3 {
                0 => f64::from_bits(rng.next()),
                // Values near everyday magnitudes, with all 53 bits set at random.
                1 => f64::from_bits((rng.next() % (1 << 52)) | ((1010 + rng.next() % 40) << 52)),
                _ => (rng.next() % 1_000_000) as f64 / POW10[(rng.next() % 10) as usize],
            };
            let s = ours(v);
            if is_hex(&s) {
                let back = from_hex(&s);
                assert_eq!(back.to_bits(), v.to_bits(), "{s}");
                // Hex only past the limits the module's note gives.
                let e = format!("{:e}", v.abs());
                let (mant, exp) = e.split_once('e').unwrap();
                let sig = mant.chars().filter(char::is_ascii_digit).count() as i32;
                let exp: i32 = exp.parse().unwrap();
                let (after_point, zeros_before) = (sig - 1 - exp, exp - (sig - 1));
                assert!(
                    sig > 15 || after_point > 22 || zeros_before > 22,
                    "{v:?} came out as {s}"
                );
            } else {
                decimal += 1;
                assert_eq!(s, format!("{v:?}"), "{}", v.to_bits());
            }
        }
        assert!(decimal > 100_000, "only {decimal} decimals");
    }
}
