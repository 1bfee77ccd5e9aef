//! Go-syntax durations (`90s`, `10m`, `1h30m`, `1.5h`, `300ms`).
//!
//! Operators coming from the Go tool write durations the Go way, so pacer accepts exactly that
//! grammar: one or more `<number><unit>` pairs, where the number may have a fraction and the unit is
//! `ns`, `us` (or `µs`/`μs`), `ms`, `s`, `m` or `h`. Anything looser (`12hours`, a bare `12`, `1d`)
//! is refused rather than guessed at, and so are negative values: no pacer setting means "before".

use std::time::Duration;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The units Go understands, longest spelling first so `ms` is not read as `m` + `s`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // µ (micro sign)
    ("\u{3bc}s", 1_000), // μ (Greek mu)
    ("ms", 1_000_000),
    ("s", NANOS_PER_SECOND),
    ("m", 60 * NANOS_PER_SECOND),
    ("h", 3_600 * NANOS_PER_SECOND),
];

/// Parses a Go duration string such as `1h30m` or `1.5s`.
///
/// As in Go, the lone string `0` is accepted; every other value needs a unit on each number.
/// The error is a short sentence suitable after a key name, e.g.
/// `invalid duration "12hours" (use Go syntax like 90s, 10m, 1h30m)`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (use Go syntax like 90s, 10m, 1h30m)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(format!("invalid duration {text:?} (must not be negative)"));
    }
    if text.is_empty() {
        return Err(invalid());
    }

    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after_whole) = split_digits(rest);
        let (fraction, after_number) = match after_whole.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after_whole),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let (unit_nanos, after_unit) = UNITS
            .iter()
            .filter_map(|(name, nanos)| {
                Some((name.len(), *nanos, after_number.strip_prefix(name)?))
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, nanos, rest)| (nanos, rest))
            .ok_or_else(invalid)?;

        total = whole_nanos(whole, unit_nanos)
            .and_then(|nanos| nanos.checked_add(fraction_nanos(fraction, unit_nanos)))
            .and_then(|nanos| nanos.checked_add(total))
            .ok_or_else(|| format!("invalid duration {text:?} (too large)"))?;
        rest = after_unit;
    }

    let nanos =
        u64::try_from(total).map_err(|_| format!("invalid duration {text:?} (too large)"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration compactly in the same syntax, so `parse_go_duration(&format_go_duration(d))`
/// gives `d` back: `1h30m`, `90ms`, `1.5s`, `0s`.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < NANOS_PER_SECOND {
        // Below a second Go switches to the largest unit that divides evenly enough to read well.
        return match nanos {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}us", n / 1_000),
            n => format!("{n}ns"),
        };
    }

    let hours = nanos / (3_600 * NANOS_PER_SECOND);
    let minutes = nanos / (60 * NANOS_PER_SECOND) % 60;
    let seconds = nanos / NANOS_PER_SECOND % 60;
    let sub_second = nanos % NANOS_PER_SECOND;

    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if sub_second > 0 {
        let fraction = format!("{sub_second:09}");
        out.push_str(&format!("{seconds}.{}s", fraction.trim_end_matches('0')));
    } else if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

fn whole_nanos(digits: &str, unit_nanos: u128) -> Option<u128> {
    // Leading zeros add nothing (Go reads `007s` as 7s), so they count
    // neither towards the length below nor as "too large".
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    // Anything longer cannot fit in the u64 of nanoseconds a Duration is built from anyway.
    if digits.len() > 30 {
        return None;
    }
    digits.parse::<u128>().ok()?.checked_mul(unit_nanos)
}

/// The nanoseconds a fractional part contributes; digits beyond nanosecond precision are dropped.
fn fraction_nanos(digits: &str, unit_nanos: u128) -> u128 {
    let mut value: u128 = 0;
    let mut scale: u128 = 1;
    for digit in digits.bytes().take(20) {
        value = value * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    value * unit_nanos / scale
}

/// `serde(with = ...)` adapter for a required `Duration` written in Go syntax.
pub mod go {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_go_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_go_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_go_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn accepts_single_units() {
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("12h"), Duration::from_secs(12 * 3600));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7µs"), Duration::from_micros(7));
        assert_eq!(ok("7μs"), Duration::from_micros(7));
        assert_eq!(ok("5ns"), Duration::from_nanos(5));
    }

    #[test]
    fn accepts_compound_values() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m30s"), Duration::from_secs(2 * 3600 + 45 * 60 + 30));
        assert_eq!(ok("1m500ms"), Duration::from_millis(60_500));
    }

    #[test]
    fn accepts_fractions() {
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
    }

    #[test]
    fn accepts_a_bare_zero_like_go() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn refuses_words_bare_numbers_days_and_empty_text() {
        for bad in [
            "12hours", "12", "", "1d", "h", ".s", "1.5", "1h 30m", " 1h", "1H", "5m!",
        ] {
            let err = parse_go_duration(bad).expect_err(bad);
            assert!(
                err.contains("use Go syntax like 90s, 10m, 1h30m"),
                "{bad}: {err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_negative_and_signed_values() {
        assert!(parse_go_duration("-5m").unwrap_err().contains("negative"));
        assert!(parse_go_duration("+5m").is_err());
    }

    #[test]
    fn refuses_values_too_large_for_a_duration() {
        assert!(
            parse_go_duration("9999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
        let forty_digits = format!("{}s", "1".repeat(40));
        assert!(
            parse_go_duration(&forty_digits)
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn leading_zeros_do_not_make_a_duration_too_large() {
        // Found by a_number_with_a_unit_is_exact_or_refused_as_too_large:
        // 31 zeros were refused as "too large" before the digits were counted
        // without them.
        assert_eq!(ok("0000000000000000000000000000000ns"), Duration::ZERO);
        assert_eq!(
            ok(&format!("{}90s", "0".repeat(40))),
            Duration::from_secs(90)
        );
        assert!(
            parse_go_duration(&format!("{}1{}h", "0".repeat(40), "0".repeat(30)))
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formats_compactly_and_round_trips() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(7), "7us"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(3601), "1h1s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_go_duration(duration), text);
            assert_eq!(ok(text), duration);
        }
    }

    use proptest::strategy::Strategy as _;

    const UNIT_NANOS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", NANOS_PER_SECOND),
        ("m", 60 * NANOS_PER_SECOND),
        ("h", 3_600 * NANOS_PER_SECOND),
    ];

    /// Digits as an operator might type them, leading zeros included, up
    /// to far more than any duration holds.
    fn digits() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof!["[0-9]{1,25}", "0{0,40}[0-9]{1,21}", "[1-9][0-9]{25,60}"]
    }

    /// The value of decimal `digits`, or `None` past u128.
    fn value_of(digits: &str) -> Option<u128> {
        digits.bytes().try_fold(0u128, |acc, d| {
            acc.checked_mul(10)?.checked_add(u128::from(d - b'0'))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_a_duration_or_a_refusal_quoting_it(
            text in proptest::prop_oneof![crate::arbitrary::hostile_text(), "[0-9.µμnumsh+-]{0,12}"],
        ) {
            match parse_go_duration(&text) {
                Ok(d) => proptest::prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d)),
                Err(e) => proptest::prop_assert!(e.starts_with(&format!("invalid duration {text:?}")), "{}", e),
            }
        }

        #[test]
        fn a_number_with_a_unit_is_exact_or_refused_as_too_large(
            digits in digits(),
            (unit, nanos) in proptest::sample::select(UNIT_NANOS.to_vec()),
        ) {
            let text = format!("{digits}{unit}");
            let exact = value_of(&digits).and_then(|n| n.checked_mul(nanos)).filter(|n| *n <= u128::from(u64::MAX));
            match (parse_go_duration(&text), exact) {
                (Ok(d), Some(n)) => proptest::prop_assert_eq!(d.as_nanos(), n),
                (Err(e), None) => proptest::prop_assert!(e.contains("too large"), "{}", e),
                (got, want) => proptest::prop_assert!(false, "{text}: got {got:?}, want {want:?} ns"),
            }
        }

        #[test]
        fn a_sum_of_parts_is_exact_or_refused_as_too_large(
            parts in proptest::collection::vec((digits(), proptest::sample::select(UNIT_NANOS.to_vec())), 1..5),
        ) {
            let text: String = parts.iter().map(|(digits, (unit, _))| format!("{digits}{unit}")).collect();
            let exact = parts
                .iter()
                .try_fold(0u128, |sum, (digits, (_, nanos))| sum.checked_add(value_of(digits)?.checked_mul(*nanos)?))
                .filter(|n| *n <= u128::from(u64::MAX));
            match (parse_go_duration(&text), exact) {
                (Ok(d), Some(n)) => proptest::prop_assert_eq!(d.as_nanos(), n),
                (Err(e), None) => proptest::prop_assert!(e.contains("too large"), "{}", e),
                (got, want) => proptest::prop_assert!(false, "{text}: got {got:?}, want {want:?} ns"),
            }
        }

        #[test]
        fn a_fraction_lies_between_its_whole_number_and_the_next(
            whole in 0u64..1_000_000,
            fraction in "[0-9]{1,30}",
            (unit, nanos) in proptest::sample::select(UNIT_NANOS.to_vec()),
        ) {
            let d = parse_go_duration(&format!("{whole}.{fraction}{unit}")).map_err(proptest::test_runner::TestCaseError::fail)?;
            let floor = u128::from(whole) * nanos;
            proptest::prop_assert!(floor <= d.as_nanos() && d.as_nanos() < floor + nanos, "{d:?}");
        }

        #[test]
        fn every_duration_pacer_can_hold_formats_and_parses_back(nanos in proptest::prop_oneof![
            proptest::prelude::any::<u64>(),
            0u64..1_000_000_000,
            (0u64..10_000_000).prop_map(|s| s * 1_000_000_000),
        ]) {
            let d = Duration::from_nanos(nanos);
            proptest::prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }
    }
}
