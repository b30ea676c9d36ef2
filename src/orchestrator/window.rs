//! Maintenance windows in local time. Comparing local wall-clock times (not UTC offsets) keeps
//! "03:00-07:00" meaning 03:00-07:00 on both DST change nights.

use super::config::WindowSpan;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Whether `now` is inside the window: start inclusive, end exclusive.
pub fn contains(span: WindowSpan, tz: &TimeZone, now: Timestamp) -> bool {
    let tod = now.to_zoned(tz.clone()).time();
    in_span(span, tod)
}

fn in_span(span: WindowSpan, tod: Time) -> bool {
    if span.crosses_midnight() {
        tod >= span.start || tod < span.end
    } else {
        tod >= span.start && tod < span.end
    }
}

/// The local date of the window occurrence in progress, or else of the next one: budgets are
/// kept per window day, so a window across midnight charges one day, not two.
pub fn window_day(span: WindowSpan, tz: &TimeZone, now: Timestamp) -> Date {
    let z = now.to_zoned(tz.clone());
    let (date, tod) = (z.date(), z.time());
    let yesterday = || date.yesterday().unwrap_or(date);
    let tomorrow = || date.tomorrow().unwrap_or(date);
    if span.crosses_midnight() {
        if tod < span.end {
            yesterday()
        } else {
            date
        }
    } else if tod < span.end {
        date
    } else {
        tomorrow()
    }
}

/// When the window next opens, as a duration from `now` (zero inside it), for messages.
pub fn opens_in(span: WindowSpan, tz: &TimeZone, now: Timestamp) -> jiff::SignedDuration {
    if contains(span, tz, now) {
        return jiff::SignedDuration::ZERO;
    }
    let z = now.to_zoned(tz.clone());
    let mut date = z.date();
    for _ in 0..3 {
        // A start that falls in a DST gap resolves to the instant after the gap.
        if let Ok(start) = date.to_datetime(span.start).to_zoned(tz.clone()) {
            if start.timestamp() > now {
                return start.timestamp().duration_since(now);
            }
        }
        date = date.tomorrow().unwrap_or(date);
    }
    jiff::SignedDuration::ZERO
}
