//! Parsing of `DUR` arguments such as `--max-staleness 500ms`.

use std::time::Duration;

/// Parses a whole number followed by a unit: `ms`, `s`, `m` or `h` (`500ms`, `2s`, `1m`).
/// A bare `0` is accepted too; any other number needs a unit, since `--max-staleness 5` could
/// mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {text:?}: expected a whole number and a unit (ms, s, m, h), e.g. 500ms, 2s, 1m");
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(invalid());
    }
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    let millis = number.checked_mul(millis_per_unit).ok_or_else(|| format!("duration {text:?} is too long"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in ["", "5", "ms", "1.5s", "-1s", "2 s", "2sec", "1d", "s2", "99999999999999999999s"] {
            let err = parse_duration(bad);
            assert!(err.is_err(), "{bad:?} parsed as {err:?}");
        }
        let err = parse_duration("5").map(|_| ()).unwrap_err();
        assert!(err.starts_with("invalid duration \"5\": expected"), "{err}");
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let err = parse_duration("18446744073709551615h").map(|_| ()).unwrap_err();
        assert!(err.contains("too long"), "{err}");
    }
}
