//! Durations as people write them in config (`500ms`, `30s`, `10m`, `24h`, `7d`: [`Dur`]) and
//! as messages show them ([`human`]: `15.0s`, `2.5m`, `4.2h remaining`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A `std::time::Duration` that reads and writes as `30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    /// Milliseconds; saturates at `i64::MAX` (config durations never get there, see
    /// [`parse_duration`]).
    pub fn as_ms(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether it is zero; sources and settings that repeat on an interval refuse that.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let hint = || {
        format!("invalid duration {text:?}: write a whole number and a unit, like 500ms, 30s, 10m, 24h or 7d")
    };
    let n: u64 = num.parse().map_err(|_| hint())?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(hint()),
    };
    // Every duration is used as i64 milliseconds somewhere (timestamps, SQL); a larger one
    // would wrap negative, so it is refused here rather than misread later.
    n.checked_mul(ms)
        .filter(|ms| *ms <= MAX_MS)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            format!(
                "duration {text:?} is too large; the longest is {}d (about 292 million years)",
                MAX_MS / 86_400_000
            )
        })
}

/// The longest duration a config may give: `i64::MAX` milliseconds.
const MAX_MS: u64 = i64::MAX as u64;

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// A duration for messages and logs, to one decimal in the largest unit that keeps it at least
/// 1: `0.4s`, `15.0s`, `2.5m`, `4.2h` (hours have no ceiling: `24.0h`, `720.0h`). The one
/// formatter for "how long" in words; [`Dur`]'s `Display` is for echoing config, exactly.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Says what a duration looks like when given a number (`within = 10`).
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"10m\" (a whole number and a unit: ms, s, m, h, d)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("10m", 600_000),
            ("24h", 86_400_000),
            ("7d", 604_800_000),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
            let shown = Dur(Duration::from_millis(ms)).to_string();
            assert_eq!(
                parse_duration(&shown).unwrap(),
                Duration::from_millis(ms),
                "{shown}"
            );
        }
    }

    #[test]
    fn human_picks_the_unit_and_keeps_one_decimal() {
        for (ms, text) in [
            (0, "0.0s"),
            (400, "0.4s"),
            (15_000, "15.0s"),
            (59_900, "59.9s"),
            (60_000, "1.0m"),
            (150_000, "2.5m"),
            (3_600_000, "1.0h"),
            (15_120_000, "4.2h"),
            (86_400_000, "24.0h"),
            (30 * 86_400_000, "720.0h"),
        ] {
            assert_eq!(human(Duration::from_millis(ms)), text, "{ms} ms");
        }
    }

    #[test]
    fn rejects_with_a_hint() {
        let e = parse_duration("10 minutes").unwrap_err();
        assert!(e.contains("like 500ms, 30s, 10m, 24h or 7d"), "{e}");
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn rejects_durations_that_overflow_milliseconds() {
        let e = parse_duration("18446744073709551615ms").unwrap_err();
        assert_eq!(
            e,
            "duration \"18446744073709551615ms\" is too large; the longest is 106751991167d (about 292 million years)"
        );
        assert!(parse_duration("106751991168d").is_err());
        let max = parse_duration("9223372036854775807ms").unwrap();
        assert_eq!(Dur(max).as_ms(), i64::MAX);
    }
}
