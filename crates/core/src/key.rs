//! Validated object keys. Every backend and every route takes a [`StorageKey`], so a traversal key
//! cannot reach I/O: it is refused when the key is built.

use std::fmt;

use crate::error::{Error, Result};

/// Longest key accepted, in bytes (S3's own limit is 1024).
pub const MAX_KEY_LEN: usize = 1024;

/// A relative, `/`-separated object key.
///
/// Invariants (checked by [`StorageKey::new`], relied on by every backend):
/// - 1..=1024 bytes, valid UTF-8;
/// - no empty, `.` or `..` segment (so no leading, trailing or doubled `/`);
/// - no backslash, no NUL or other ASCII control character.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct StorageKey(String);

impl StorageKey {
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        validate(&key, false)?;
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments, e.g. `["user1", "a.png"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// `prefix/` joined with this key.
    pub fn with_prefix(&self, prefix: &StoragePrefix) -> Result<Self> {
        Self::new(format!("{}{}", prefix.as_str(), self.0))
    }

    /// This key with `prefix` removed, if it starts with it.
    pub fn strip_prefix(&self, prefix: &StoragePrefix) -> Option<Self> {
        let rest = self.0.strip_prefix(prefix.as_str())?;
        Self::new(rest).ok()
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageKey({:?})", self.0)
    }
}

impl AsRef<str> for StorageKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Keys order and compare as their strings, so maps keyed by StorageKey can be queried by `&str`.
impl std::borrow::Borrow<str> for StorageKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StorageKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for StorageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StorageKey::new(s).map_err(serde::de::Error::custom)
    }
}

/// A listing prefix: empty (everything), or key segments optionally ending in `/`.
///
/// Matching is by plain string prefix, as S3 does: `"a/b"` matches `"a/b.png"` and `"a/b/c"`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StoragePrefix(String);

impl StoragePrefix {
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        if !prefix.is_empty() {
            validate(prefix.strip_suffix('/').unwrap_or(&prefix), true)?;
        }
        Ok(Self(prefix))
    }

    /// The empty prefix, matching every key.
    pub fn all() -> Self {
        Self(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, key: &StorageKey) -> bool {
        key.as_str().starts_with(&self.0)
    }
}

impl fmt::Display for StoragePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StoragePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoragePrefix({:?})", self.0)
    }
}

fn validate(key: &str, is_prefix: bool) -> Result<()> {
    let what = if is_prefix { "prefix" } else { "key" };
    let refuse = |why: &str| {
        Error::invalid_input(format!("invalid storage {what}: {why}"))
            .with_operation("storage_key.validate")
            .with_context(what, escape(key))
    };
    if key.is_empty() {
        return Err(refuse("it is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(refuse(&format!(
            "it is {} bytes long, the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if key.contains('\\') {
        return Err(refuse("it contains a backslash"));
    }
    if key.chars().any(|c| c.is_ascii_control()) {
        return Err(refuse("it contains a NUL or control character"));
    }
    if key.starts_with('/') {
        return Err(refuse("it is absolute (starts with '/')"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(refuse("it has an empty segment ('//' or a trailing '/')")),
            "." | ".." => return Err(refuse("it has a '.' or '..' segment")),
            _ => {}
        }
    }
    Ok(())
}

/// Keys can hold control characters and be 2 KB long: show them escaped and cut.
fn escape(key: &str) -> String {
    let escaped: String = key.escape_debug().collect();
    if escaped.len() > 80 {
        let cut = escaped
            .char_indices()
            .take_while(|(i, _)| *i < 77)
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        format!("{}...", &escaped[..cut])
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn accepts_ordinary_keys() {
        for ok in [
            "a.png",
            "user1/a.png",
            "large_output/0192-ab",
            "dir.with.dots/..hidden",
            "ünïcode/ファイル.txt",
            "a b/c d",
        ] {
            assert_eq!(StorageKey::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(
            StorageKey::new("x".repeat(1024)).unwrap().as_str().len(),
            1024
        );
    }

    #[test]
    fn refuses_traversal_and_malformed_keys() {
        let long = "a".repeat(2048);
        for bad in [
            "",
            "../x",
            "a/../../b",
            "/etc/passwd",
            "a\\b",
            "..\\f",
            "a\0b",
            "a\nb",
            ".",
            "..",
            "a/./b",
            "a//b",
            "trailing/",
            "////",
            long.as_str(),
        ] {
            let err = StorageKey::new(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("invalid storage key"), "{err}");
        }
    }

    #[test]
    fn error_shows_escaped_and_truncated_key() {
        let err = StorageKey::new(format!("{}\0", "a".repeat(2000))).unwrap_err();
        let shown = err.context_value("key").unwrap();
        assert!(shown.len() <= 80, "{shown}");
        assert!(err.to_string().contains("2001 bytes long"), "{err}");
        let err = StorageKey::new("a\0b").unwrap_err();
        assert_eq!(err.context_value("key"), Some("a\\0b"));
    }

    #[test]
    fn prefixes() {
        assert!(StoragePrefix::new("").unwrap().is_empty());
        let p = StoragePrefix::new("user1/").unwrap();
        assert!(p.matches(&StorageKey::new("user1/a").unwrap()));
        assert!(!p.matches(&StorageKey::new("user10/a").unwrap()));
        assert!(StoragePrefix::new("a/b")
            .unwrap()
            .matches(&StorageKey::new("a/b.png").unwrap()));
        for bad in ["../", "/", "a//", "a/../", "\\"] {
            assert!(StoragePrefix::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_join_and_strip() {
        let p = StoragePrefix::new("temp/").unwrap();
        let k = StorageKey::new("x/y").unwrap();
        let joined = k.with_prefix(&p).unwrap();
        assert_eq!(joined.as_str(), "temp/x/y");
        assert_eq!(joined.strip_prefix(&p).unwrap(), k);
        assert_eq!(k.file_name(), "y");
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<StorageKey>("\"../x\"").is_err());
        assert_eq!(
            serde_json::from_str::<StorageKey>("\"a/b\"")
                .unwrap()
                .as_str(),
            "a/b"
        );
    }
}
