//! Spec version strings: the known set, parsing and numeric comparison.

use super::error::{CniError, CniResult, code};

/// Every spec version, oldest first (the Go library's `version.All`).
pub const ALL: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The version VERSION replies with and results default to.
pub const CURRENT: &str = "1.1.0";

/// The versions from `min` on, as the reference's `VersionsStartingFrom`.
pub fn starting_from(min: &str) -> &'static [&'static str] {
    let start = ALL.iter().position(|v| *v == min).unwrap_or(0);
    &ALL[start..]
}

/// Parses `major[.minor[.micro]]`; an empty string is 0.1.0, as in the Go library.
pub fn parse(version: &str) -> CniResult<(u64, u64, u64)> {
    if version.is_empty() {
        return Ok((0, 1, 0));
    }
    let bad = |why: &str| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("failed to parse version {version:?}: {why}"),
        )
    };
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3 {
        return Err(bad("too many parts"));
    }
    let mut numbers = [0u64; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        *slot = part.parse().map_err(|_| bad("not a number"))?;
    }
    Ok((numbers[0], numbers[1], numbers[2]))
}

/// `a >= b` numerically; unparsable versions compare as an error.
pub fn at_least(a: &str, b: &str) -> CniResult<bool> {
    Ok(parse(a)? >= parse(b)?)
}

/// The result family a version belongs to: how its results are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 0.1.0 and 0.2.0: `ip4`/`ip6` objects.
    Legacy,
    /// 0.3.0, 0.3.1, 0.4.0: `ips` with a `version` key.
    V04,
    /// 1.0.0 and 1.1.0.
    V1,
}

pub fn family(version: &str) -> CniResult<Family> {
    match version {
        "" | "0.1.0" | "0.2.0" => Ok(Family::Legacy),
        "0.3.0" | "0.3.1" | "0.4.0" => Ok(Family::V04),
        "1.0.0" | "1.1.0" => Ok(Family::V1),
        other => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("unsupported CNI result version {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_empty_versions() {
        assert_eq!(parse("").unwrap(), (0, 1, 0));
        assert_eq!(parse("1").unwrap(), (1, 0, 0));
        assert_eq!(parse("1.1").unwrap(), (1, 1, 0));
        assert_eq!(parse("0.4.0").unwrap(), (0, 4, 0));
        assert_eq!(parse("1.2.3.4").unwrap_err().code, code::DECODING_FAILURE);
        assert_eq!(parse("a.b").unwrap_err().code, code::DECODING_FAILURE);
    }

    #[test]
    fn compares_numerically() {
        assert!(at_least("0.10.0", "0.4.0").unwrap());
        assert!(!at_least("0.3.1", "0.4.0").unwrap());
        assert!(at_least("1.1.0", "1.1").unwrap());
    }

    #[test]
    fn lists_versions_from_a_minimum() {
        assert_eq!(
            starting_from("0.3.1"),
            &["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        );
        assert_eq!(starting_from("0.1.0").len(), 7);
    }
}
