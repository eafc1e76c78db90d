//! Human-friendly units in the config file: durations ("30s", "500ms") and sizes ("1MiB", "64KiB").

use std::time::Duration;

/// Parses a duration such as `"30s"`, `"1m 30s"` or `"250ms"`; bare numbers are refused so that a
/// forgotten unit never silently means seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a duration (use a unit, e.g. \"30s\" or \"500ms\")"
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|_| format!("{text:?} is not a duration (e.g. \"30s\", \"500ms\", \"10m\")"))
}

/// Parses a byte size: a plain number of bytes, or a number with B, KB, KiB, MB, MiB, GB or GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let err = || format!("{text:?} is not a size (e.g. \"1MiB\", \"64KiB\", \"4096\")");
    let number: u64 = digits.parse().map_err(|_| err())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return Err(err()),
    };
    number.checked_mul(factor).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2 MB").unwrap(), 2_000_000);
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
