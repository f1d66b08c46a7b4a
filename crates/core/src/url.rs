//! URL path building shared by every backend: one rule for escaping key segments.

use percent_encoding::{utf8_percent_encode, AsciiSet, PercentEncode, NON_ALPHANUMERIC};

use crate::StorageKey;

/// Everything but RFC 3986 unreserved characters is escaped in a path segment, so `?`, `#`,
/// space, `+` or `%` in a key can never change a route or a query.
pub const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment, percent-encoded.
pub fn encode_segment(segment: &str) -> PercentEncode<'_> {
    utf8_percent_encode(segment, SEGMENT)
}

/// `{base}/{path}` with each `/`-separated segment of `path` encoded and exactly one `/` between
/// base and path.
pub fn join_path(base: &str, path: &str) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in path.split('/') {
        url.push('/');
        url.extend(encode_segment(segment));
    }
    url
}

/// `{base}/{key}`, each key segment encoded.
pub fn join_url(base: &str, key: &StorageKey) -> String {
    join_path(base, key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_encodes_segments() {
        let key = StorageKey::new("a b/ü+1%?#.png").unwrap();
        assert_eq!(
            join_url("http://localhost:7777/api/storage/", &key),
            "http://localhost:7777/api/storage/a%20b/%C3%BC%2B1%25%3F%23.png"
        );
        assert_eq!(
            join_url("/api/storage", &StorageKey::new("x-y_z.~png").unwrap()),
            "/api/storage/x-y_z.~png"
        );
    }
}
