//! Maintenance windows in local time. A window is written in wall-clock time ("03:00-07:00")
//! and each night's occurrence is resolved to instants in the configured zone, so it means
//! 03:00-07:00 local on both DST change nights:
//! - a start or end that falls in a spring-forward gap resolves to the first valid instant
//!   after it (the transition), as cron implementations do for jobs in the gap; a window
//!   entirely inside the gap opens there for its nominal length;
//! - a start or end that falls in a fall-back fold resolves to its first occurrence, so the
//!   window covers the repeated hour.

use super::config::WindowSpan;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// The instant local `date` at `time` names: the transition when it falls in a gap, the
/// earlier instant when it falls in a fold.
fn resolve(tz: &TimeZone, date: Date, time: Time) -> Option<Timestamp> {
    let dt = DateTime::from_parts(date, time);
    let ambiguous = tz.to_ambiguous_timestamp(dt);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } | AmbiguousOffset::Fold { before: offset, .. } => {
            offset.to_timestamp(dt).ok()
        }
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the offset after the gap, the instant lies before the transition;
            // the next transition from there is where the gap ends.
            let early = after.to_timestamp(dt).ok()?;
            tz.following(early).next().map(|t| t.timestamp())
        }
    }
}

/// Length of the window as written (crossing midnight when the end is before the start).
fn nominal_length(span: WindowSpan) -> SignedDuration {
    let len = span.start.duration_until(span.end);
    if len.is_negative() {
        len + SignedDuration::from_hours(24)
    } else {
        len
    }
}

/// The occurrence of the window that starts on local `date`: `[open, close)`.
pub fn occurrence(span: WindowSpan, tz: &TimeZone, date: Date) -> Option<(Timestamp, Timestamp)> {
    let open = resolve(tz, date, span.start)?;
    let end_date = if span.crosses_midnight() {
        date.tomorrow().ok()?
    } else {
        date
    };
    let close = resolve(tz, end_date, span.end)?;
    // Entirely inside a gap, both ends resolve to the transition: keep the window's length.
    let close = if close <= open {
        open.checked_add(nominal_length(span)).ok()?
    } else {
        close
    };
    Some((open, close))
}

/// The occurrence in progress at `now`, or else the next one, with the local date it starts on.
fn current_or_next(
    span: WindowSpan,
    tz: &TimeZone,
    now: Timestamp,
) -> (Date, Timestamp, Timestamp) {
    let today = now.to_zoned(tz.clone()).date();
    let mut date = today.yesterday().unwrap_or(today);
    for _ in 0..4 {
        if let Some((open, close)) = occurrence(span, tz, date) {
            if close > now {
                return (date, open, close);
            }
        }
        date = date.tomorrow().unwrap_or(date);
    }
    (date, now, now)
}

/// Whether `now` is inside the window: open inclusive, close exclusive.
pub fn contains(span: WindowSpan, tz: &TimeZone, now: Timestamp) -> bool {
    let (_, open, close) = current_or_next(span, tz, now);
    open <= now && now < close
}

/// The local date of the window occurrence in progress, or else of the next one: budgets are
/// kept per window day, so a window across midnight charges one day, not two.
pub fn window_day(span: WindowSpan, tz: &TimeZone, now: Timestamp) -> Date {
    current_or_next(span, tz, now).0
}

/// When the window next opens, as a duration from `now` (zero inside it), for messages. The
/// opening it names is one that happens: a start in a DST gap opens at the transition.
pub fn opens_in(span: WindowSpan, tz: &TimeZone, now: Timestamp) -> SignedDuration {
    let (_, open, _) = current_or_next(span, tz, now);
    if open <= now {
        SignedDuration::ZERO
    } else {
        open.duration_since(now)
    }
}

/// What `vigil check` says about a window in `tz` over the year from `from`: each night a DST
/// transition moves or stretches (a start or end in a gap or a fold), in words, for example
/// "on 2026-03-08 02:00-03:00: its start falls in a DST gap or repeated hour; the window opens
/// at 03:00 EDT and stays open 1.0h".
pub fn dst_warnings(span: WindowSpan, tz: &TimeZone, from: Timestamp) -> Vec<String> {
    let until = from
        .checked_add(SignedDuration::from_hours(24 * 366))
        .unwrap_or(from);
    let mut out = Vec::new();
    for t in tz.following(from) {
        if t.timestamp() > until {
            break;
        }
        // The local day on which the transition happens, and the one before (a window
        // across midnight starts the day before).
        let day = t.timestamp().to_zoned(tz.clone()).date();
        for date in [day.yesterday().unwrap_or(day), day] {
            let touched = |time: Time, d: Date| {
                !matches!(
                    tz.to_ambiguous_timestamp(DateTime::from_parts(d, time))
                        .offset(),
                    AmbiguousOffset::Unambiguous { .. }
                )
            };
            let end_date = if span.crosses_midnight() {
                date.tomorrow().unwrap_or(date)
            } else {
                date
            };
            if !(touched(span.start, date) || touched(span.end, end_date)) {
                continue;
            }
            let Some((open, close)) = occurrence(span, tz, date) else {
                continue;
            };
            let local = |ts: Timestamp| ts.to_zoned(tz.clone()).strftime("%H:%M %Z").to_string();
            let length = crate::config::human(close.duration_since(open).unsigned_abs());
            let which = if touched(span.start, date) {
                "start"
            } else {
                "end"
            };
            out.push(format!(
                "on {date} {span}: its {which} falls in a DST gap or repeated hour; the window opens at {} and stays open {length}",
                local(open)
            ));
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn span(s: &str) -> WindowSpan {
        WindowSpan::parse(s).unwrap()
    }

    #[test]
    fn a_window_that_is_the_spring_forward_gap_opens_after_it_for_its_length() {
        let w = span("02:00-03:00");
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
        let before = at("2026-03-08T06:59:30Z"); // 01:59:30 EST
        assert!(!contains(w, &ny(), before));
        assert_eq!(opens_in(w, &ny(), before), SignedDuration::from_secs(30));
        let after = at("2026-03-08T07:00:30Z"); // 03:00:30 EDT
        assert!(contains(w, &ny(), after), "open that night, not skipped");
        assert_eq!(opens_in(w, &ny(), after), SignedDuration::ZERO);
        assert!(contains(w, &ny(), at("2026-03-08T07:59:59Z")));
        assert!(
            !contains(w, &ny(), at("2026-03-08T08:00:00Z")),
            "one hour long"
        );
        assert_eq!(
            window_day(w, &ny(), after).to_string(),
            "2026-03-08",
            "budgets charge that night"
        );
    }

    #[test]
    fn a_start_in_the_gap_opens_at_the_transition_and_keeps_its_end() {
        let w = span("02:30-05:00");
        let (open, close) = occurrence(w, &ny(), "2026-03-08".parse().unwrap()).unwrap();
        assert_eq!(open, at("2026-03-08T07:00:00Z")); // 03:00 EDT
        assert_eq!(close, at("2026-03-08T09:00:00Z")); // 05:00 EDT
    }

    #[test]
    fn the_fall_back_night_covers_the_repeated_hour_and_ordinary_nights_are_unchanged() {
        let w = span("01:00-02:00");
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:xx happens twice.
        assert!(contains(w, &ny(), at("2026-11-01T05:30:00Z"))); // 01:30 EDT
        assert!(contains(w, &ny(), at("2026-11-01T06:30:00Z"))); // 01:30 EST
        assert!(!contains(w, &ny(), at("2026-11-01T07:00:00Z"))); // 02:00 EST
        let m = span("03:00-07:00");
        assert!(contains(m, &ny(), at("2026-06-01T07:00:00Z"))); // 03:00 EDT
        assert!(!contains(m, &ny(), at("2026-06-01T11:00:00Z"))); // 07:00 EDT
        assert_eq!(
            opens_in(m, &ny(), at("2026-06-01T11:00:00Z")),
            SignedDuration::from_hours(20)
        );
    }

    #[test]
    fn windows_across_midnight_charge_the_night_they_start() {
        let w = span("22:00-02:00");
        let t = at("2026-06-02T05:00:00Z"); // 01:00 EDT on the 2nd
        assert!(contains(w, &ny(), t));
        assert_eq!(window_day(w, &ny(), t).to_string(), "2026-06-01");
        let t = at("2026-06-02T07:00:00Z"); // 03:00 EDT
        assert!(!contains(w, &ny(), t));
        assert_eq!(window_day(w, &ny(), t).to_string(), "2026-06-02");
    }

    #[test]
    fn check_warns_about_windows_that_touch_a_transition() {
        let from = at("2026-01-01T00:00:00Z");
        let warnings = dst_warnings(span("02:00-03:00"), &ny(), from);
        assert_eq!(
            warnings,
            ["on 2026-03-08 02:00-03:00: its start falls in a DST gap or repeated hour; the window opens at 03:00 EDT and stays open 1.0h"]
        );
        let warnings = dst_warnings(span("01:00-02:00"), &ny(), from);
        assert_eq!(
            warnings,
            [
                "on 2026-03-08 01:00-02:00: its end falls in a DST gap or repeated hour; the window opens at 01:00 EST and stays open 1.0h",
                "on 2026-11-01 01:00-02:00: its start falls in a DST gap or repeated hour; the window opens at 01:00 EDT and stays open 2.0h"
            ]
        );
        assert!(dst_warnings(span("03:00-07:00"), &ny(), from).is_empty());
        assert!(dst_warnings(span("02:00-03:00"), &TimeZone::UTC, from).is_empty());
    }
}
