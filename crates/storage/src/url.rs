use nodetool_core::StorageKey;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters escaped in a URL path segment (RFC 3986 `pchar` complement).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'^')
    .add(b'|')
    .add(b'\\')
    .add(b'+');

/// `{base}/{key}` with each key segment percent-encoded and exactly one `/` between them.
pub fn join_url(base: &str, key: &StorageKey) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in key.segments() {
        url.push('/');
        url.extend(utf8_percent_encode(segment, SEGMENT));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_encodes_segments() {
        let key = StorageKey::new("a b/ü+1%.png").unwrap();
        assert_eq!(
            join_url("http://localhost:7777/api/storage/", &key),
            "http://localhost:7777/api/storage/a%20b/%C3%BC%2B1%25.png"
        );
        assert_eq!(
            join_url("/api/storage", &StorageKey::new("x.png").unwrap()),
            "/api/storage/x.png"
        );
    }
}
