//! Parsers for setting values. Each returns the typed value, or the end of an error sentence
//! ("is not a port number") that the caller prefixes with `NAME=value from SOURCE`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::registry::ValueKind;

pub type Parsed<T> = std::result::Result<T, String>;

/// Checks `raw` against `kind` without keeping the value (loading validates every setting first,
/// so that errors come out in registry order whatever field reads them).
pub fn validate(kind: ValueKind, raw: &str) -> Parsed<()> {
    match kind {
        ValueKind::Text | ValueKind::Path => Ok(()),
        ValueKind::Url => url(raw).map(drop),
        ValueKind::UrlOrPath => url_or_path(raw).map(drop),
        ValueKind::Bool => boolean(raw).map(drop),
        ValueKind::Port => port(raw).map(drop),
        ValueKind::Count => count(raw).map(drop),
        ValueKind::Seconds => seconds(raw).map(drop),
        ValueKind::Size => size(raw).map(drop),
        ValueKind::Cpus => cpus(raw).map(drop),
        ValueKind::Gigabytes => gigabytes(raw).map(drop),
        ValueKind::Integer => integer(raw).map(drop),
        ValueKind::Choice(choices) => choice(raw, choices).map(drop),
        ValueKind::List => list(raw).map(drop),
        ValueKind::PostgresUrl => crate::database::postgres_url(raw).map(drop),
    }
}

pub fn boolean(raw: &str) -> Parsed<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("is not a boolean (use true/false, 1/0 or yes/no)".into()),
    }
}

pub fn port(raw: &str) -> Parsed<u16> {
    match raw.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("is not a port number (1-65535)".into()),
    }
}

pub fn count(raw: &str) -> Parsed<usize> {
    match raw.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("is not a whole number of at least 1".into()),
    }
}

pub fn integer(raw: &str) -> Parsed<i64> {
    raw.parse::<i64>()
        .map_err(|_| "is not a whole number".to_string())
}

pub fn cpus(raw: &str) -> Parsed<f64> {
    match raw.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err("is not a positive number of CPUs (e.g. 1.5)".into()),
    }
}

pub fn gigabytes(raw: &str) -> Parsed<f64> {
    match raw.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err("is not a number of gigabytes of at least 0 (e.g. 24 or 7.5)".into()),
    }
}

/// Whole seconds, or a whole number with a unit: `s`, `m`, `h`, `d`.
pub fn seconds(raw: &str) -> Parsed<Duration> {
    const WHY: &str = "is not a duration in seconds (e.g. 30, 90s, 5m, 1h, 1d)";
    let lower = raw.to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let factor: u64 = match unit.trim_start() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(WHY.into()),
    };
    let n: u64 = digits.parse().map_err(|_| WHY.to_string())?;
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| WHY.to_string())
}

/// A byte size as Docker's `RAMInBytes` reads it: a number (decimals allowed), an optional space,
/// an optional unit `k m g t p` (binary multiples), then an optional `i` and `b`, any case.
/// `2g`, `512m`, `1.5GiB`, `1048576` and `100b` are all accepted.
pub fn size(raw: &str) -> Parsed<u64> {
    const WHY: &str = "is not a size (e.g. 1048576, 512m, 2g)";
    let lower = raw.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, rest) = lower.split_at(split);
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (shift, rest) = match rest.chars().next() {
        Some('k') => (10, &rest[1..]),
        Some('m') => (20, &rest[1..]),
        Some('g') => (30, &rest[1..]),
        Some('t') => (40, &rest[1..]),
        Some('p') => (50, &rest[1..]),
        _ => (0, rest),
    };
    let rest = rest.strip_prefix('i').unwrap_or(rest);
    let rest = rest.strip_prefix('b').unwrap_or(rest);
    if !rest.is_empty() || number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(WHY.into());
    }
    let multiplier = 1u64 << shift;
    if !number.contains('.') {
        let n: u64 = number.parse().map_err(|_| WHY.to_string())?;
        return n
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{WHY}: too large"));
    }
    let n: f64 = number.parse().map_err(|_| WHY.to_string())?;
    let bytes = n * multiplier as f64;
    // u64::MAX is not exactly representable; anything at or beyond 2^64 overflows.
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!("{WHY}: too large"));
    }
    // Truncation is what Docker does with fractional bytes.
    Ok(bytes as u64)
}

pub fn choice(raw: &str, choices: &[&'static str]) -> Parsed<&'static str> {
    let lower = raw.to_ascii_lowercase();
    choices
        .iter()
        .copied()
        .find(|c| *c == lower)
        .ok_or_else(|| format!("is not one of {}", choices.join(", ")))
}

/// An absolute http(s) URL with a host; trailing slashes removed.
pub fn url(raw: &str) -> Parsed<String> {
    const WHY: &str = "is not an http:// or https:// URL";
    let lower = raw.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| WHY.to_string())?;
    if rest.is_empty() || rest.starts_with('/') || raw.chars().any(char::is_whitespace) {
        return Err(WHY.into());
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// An absolute URL, or a path on this server (`/files`); trailing slashes removed.
pub fn url_or_path(raw: &str) -> Parsed<String> {
    if raw.starts_with('/') && !raw.starts_with("//") {
        if raw.chars().any(char::is_whitespace) {
            return Err("is not a URL or a path starting with /".into());
        }
        return Ok(raw.trim_end_matches('/').to_string());
    }
    url(raw).map_err(|_| "is not an http(s) URL or a path starting with /".into())
}

pub fn list(raw: &str) -> Parsed<Vec<String>> {
    let items: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if items.is_empty() {
        return Err("is not a comma-separated list".into());
    }
    Ok(items)
}

/// `ALLOWED_STRATEGIES`: a list of strategy names, each known, duplicates dropped.
pub fn strategies(raw: &str) -> Parsed<Vec<&'static str>> {
    let mut out = Vec::new();
    for item in list(raw)? {
        let s = choice(&item, crate::registry::STRATEGY_CHOICES).map_err(|_| {
            format!("names {item:?}, which is not one of threaded, subprocess, docker")
        })?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Expands a leading `~` (alone or followed by `/`) to `home`; other paths are kept as given.
pub fn path(raw: &str, home: Option<&Path>) -> PathBuf {
    match (raw, home) {
        ("~", Some(home)) => home.to_path_buf(),
        (_, Some(home)) if raw.starts_with("~/") => home.join(&raw[2..]),
        _ => PathBuf::from(raw),
    }
}

/// True when an `ASSET_BUCKET` value names a filesystem path rather than a bucket.
pub fn is_path_like(value: &str) -> bool {
    value.starts_with('/') || value.starts_with('.') || value.starts_with('~')
}

/// A secret of kind `kind` for display: a URL keeps all but its password, anything else is
/// [`mask`]ed.
pub(crate) fn redact(kind: ValueKind, value: &str) -> String {
    match kind {
        ValueKind::PostgresUrl => crate::database::redact_url(value),
        _ => mask(value),
    }
}

/// Hides a secret for display: `****` plus the last four characters, or only `****` when the
/// value is short enough that four characters would give too much of it away.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 12 {
        return "****".to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("****{tail}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_docker() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1048576", Some(1_048_576)),
            ("0", Some(0)),
            ("100b", Some(100)),
            ("1k", Some(1024)),
            ("1kb", Some(1024)),
            ("1KiB", Some(1024)),
            ("512m", Some(512 << 20)),
            ("512M", Some(512 << 20)),
            ("2g", Some(2 << 30)),
            ("2 GB", Some(2 << 30)),
            ("2gib", Some(2 << 30)),
            ("1.5g", Some(3 << 29)),
            ("1t", Some(1 << 40)),
            ("1p", Some(1 << 50)),
            ("", None),
            ("g", None),
            ("-1g", None),
            ("2x", None),
            ("2gg", None),
            ("1.g", None),
            (".5g", None),
            ("1.2.3", None),
            ("2 g b x", None),
            ("99999999999999999999", None),
            ("20000000p", None),
        ];
        for (raw, want) in cases {
            assert_eq!(size(raw).ok(), *want, "size({raw:?})");
        }
    }

    #[test]
    fn seconds_accept_units() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("30", Some(30)),
            ("90s", Some(90)),
            ("5m", Some(300)),
            ("2H", Some(7200)),
            ("1d", Some(86_400)),
            ("1 h", Some(3600)),
            ("", None),
            ("h", None),
            ("1.5h", None),
            ("-3", None),
            ("3w", None),
            ("18446744073709551615d", None),
        ];
        for (raw, want) in cases {
            assert_eq!(
                seconds(raw).ok().map(|d| d.as_secs()),
                *want,
                "seconds({raw:?})"
            );
        }
    }

    #[test]
    fn booleans_ports_counts() {
        for (raw, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ] {
            assert_eq!(boolean(raw), Ok(want), "boolean({raw:?})");
        }
        assert!(boolean("maybe").is_err());
        assert!(boolean("2").is_err());
        assert_eq!(port("11211"), Ok(11211));
        assert!(port("0").is_err());
        assert!(port("65536").is_err());
        assert!(port("abc").is_err());
        assert_eq!(count("4"), Ok(4));
        assert!(count("0").is_err());
        assert_eq!(integer("-1"), Ok(-1));
        assert!(integer("1.0").is_err());
        assert_eq!(cpus("1.5"), Ok(1.5));
        assert!(cpus("0").is_err());
        assert!(cpus("NaN").is_err());
        assert!(cpus("inf").is_err());
    }

    #[test]
    fn urls_and_paths() {
        assert_eq!(
            url("https://x.example.com/").as_deref(),
            Ok("https://x.example.com")
        );
        assert_eq!(
            url("HTTP://localhost:9000").as_deref(),
            Ok("HTTP://localhost:9000")
        );
        for bad in [
            "localhost:9000",
            "ftp://x",
            "https://",
            "https:///x",
            "http://a b",
        ] {
            assert!(url(bad).is_err(), "url({bad:?})");
        }
        assert_eq!(url_or_path("/files/").as_deref(), Ok("/files"));
        assert_eq!(
            url_or_path("https://cdn.example.com/a/").as_deref(),
            Ok("https://cdn.example.com/a")
        );
        assert!(url_or_path("files").is_err());
        assert!(url_or_path("//evil.example.com").is_err());

        let home = Path::new("/home/u");
        assert_eq!(path("~", Some(home)), PathBuf::from("/home/u"));
        assert_eq!(path("~/a/b", Some(home)), PathBuf::from("/home/u/a/b"));
        assert_eq!(path("~other/a", Some(home)), PathBuf::from("~other/a"));
        assert_eq!(path("~/a", None), PathBuf::from("~/a"));
        assert_eq!(path("./rel", Some(home)), PathBuf::from("./rel"));
    }

    #[test]
    fn choices_and_lists() {
        assert_eq!(
            choice("Production", &["development", "production"]),
            Ok("production")
        );
        assert_eq!(
            choice("prod", &["development", "production"]),
            Err("is not one of development, production".to_string())
        );
        assert_eq!(
            list(" 0, 1 ,,2 "),
            Ok(vec!["0".into(), "1".into(), "2".into()])
        );
        assert!(list(" , ").is_err());
    }

    #[test]
    fn masking_keeps_at_most_four_characters() {
        assert_eq!(mask("sk-abcdefghijklmnop1234"), "****1234");
        assert_eq!(mask("exactly12chr"), "****2chr");
        assert_eq!(mask("elevenchars"), "****");
        assert_eq!(mask("abcd"), "****");
        assert_eq!(mask(""), "****");
        // Counted in characters, so a multi-byte tail is not split.
        assert_eq!(mask("ééééééééééééabcé"), "****abcé");
    }

    #[test]
    fn path_like_buckets() {
        for p in ["/data/assets", "./assets", "../x", "~/assets", "~"] {
            assert!(is_path_like(p), "{p}");
        }
        for b in ["assets", "my-bucket", "a/b"] {
            assert!(!is_path_like(b), "{b}");
        }
    }
}
