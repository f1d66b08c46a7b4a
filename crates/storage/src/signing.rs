//! HMAC-signed, expiring URLs for objects served by our own API (file and memory storage), so
//! that a plain `<img src>` works while the API requires auth.
//!
//! A signature is HMAC-SHA256 over `"{path}\n{expires}"`, where `path` is the *decoded* URL path
//! (`/api/storage/u1/a.png`) and `expires` the expiry in Unix seconds. It travels as the query
//! `?expires=<secs>&sig=<hex>`. The method is not signed: only GET and HEAD ever accept a
//! signature (the server enforces that). The key is given by the caller; this crate never reads
//! the environment or generates keys.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use nodetool_core::{Error, ErrorKind, Result};
use percent_encoding::percent_decode_str;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Shortest key accepted: below 128 bits a key could be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// Expiries are rounded up to this step so the same object keeps the same URL for a while and
/// browsers can cache it.
const EXPIRY_STEP_SECS: i64 = 300;

/// Why a signature was refused. Callers answer all of them with 401; the variant is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// `expires` or `sig` is missing or malformed.
    Malformed,
    /// The expiry is in the past.
    Expired,
    /// The signature does not match the path and expiry.
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::Malformed => "malformed signature parameters",
            SignatureError::Expired => "signature expired",
            SignatureError::Mismatch => "signature does not match",
        })
    }
}

impl std::error::Error for SignatureError {}

/// Signs and verifies URL paths. Cheap to clone; `Debug` never shows the key.
#[derive(Clone)]
pub struct UrlSigner {
    mac: HmacSha256,
    ttl: Duration,
}

impl fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl UrlSigner {
    /// A signer whose URLs live at least `ttl` (rounded up to 5 minutes). The key must be at
    /// least [`MIN_KEY_LEN`] bytes.
    pub fn new(key: &[u8], ttl: Duration) -> Result<Self> {
        if key.len() < MIN_KEY_LEN {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "the URL signing key is {} bytes; at least {MIN_KEY_LEN} are needed (NODETOOL_URL_SIGNING_KEY)",
                    key.len()
                ),
            )
            .with_operation("url_signer.new"));
        }
        let mac = <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|e| {
            Error::new(ErrorKind::ConfigInvalid, "unusable URL signing key")
                .with_operation("url_signer.new")
                .with_source(Box::<dyn std::error::Error + Send + Sync>::from(
                    e.to_string(),
                ))
        })?;
        Ok(Self { mac, ttl })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The hex signature of `path` (decoded) valid until `expires` (Unix seconds).
    pub fn signature(&self, path: &str, expires: i64) -> String {
        let mut mac = self.mac.clone();
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The expiry a URL signed at `now` gets: `now + ttl`, rounded up to the next 5 minutes.
    pub fn expiry(&self, now: DateTime<Utc>) -> i64 {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let raw = now.timestamp().saturating_add(ttl);
        raw.saturating_add(EXPIRY_STEP_SECS - 1) / EXPIRY_STEP_SECS * EXPIRY_STEP_SECS
    }

    /// `url` with `expires` and `sig` appended. The signed path is `url`'s path, decoded.
    pub fn sign_url(&self, url: &str, now: DateTime<Utc>) -> String {
        let expires = self.expiry(now);
        let path = decoded_path(url);
        let sig = self.signature(&path, expires);
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}expires={expires}&sig={sig}")
    }

    /// Checks a signature for the decoded `path` in constant time.
    pub fn verify(
        &self,
        path: &str,
        expires: &str,
        sig: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), SignatureError> {
        let expires: i64 = expires.parse().map_err(|_| SignatureError::Malformed)?;
        let sig = unhex(sig).ok_or(SignatureError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        // Check the MAC before the expiry so a tampered expiry reads as a mismatch.
        mac.verify_slice(&sig)
            .map_err(|_| SignatureError::Mismatch)?;
        if expires < now.timestamp() {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

/// The path of an absolute or relative URL, percent-decoded, without query or fragment.
pub fn decoded_path(url: &str) -> String {
    let without_scheme = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => url,
    };
    let path = without_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or(without_scheme);
    percent_decode_str(path).decode_utf8_lossy().into_owned()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> UrlSigner {
        UrlSigner::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    fn query(url: &str) -> (String, String) {
        let q = url.split_once('?').unwrap().1;
        let mut expires = String::new();
        let mut sig = String::new();
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            match k {
                "expires" => expires = v.to_owned(),
                "sig" => sig = v.to_owned(),
                _ => {}
            }
        }
        (expires, sig)
    }

    #[test]
    fn signed_url_verifies_for_its_path_only() {
        let s = signer();
        let now = Utc::now();
        let url = s.sign_url("http://h:7777/api/storage/u1/a%20b.png", now);
        let (expires, sig) = query(&url);
        assert!(expires.parse::<i64>().unwrap() >= now.timestamp() + 3600);
        assert_eq!(
            s.verify("/api/storage/u1/a b.png", &expires, &sig, now),
            Ok(())
        );
        assert_eq!(
            s.verify("/api/storage/u2/a b.png", &expires, &sig, now),
            Err(SignatureError::Mismatch)
        );
        let later = now + chrono::Duration::hours(3);
        assert_eq!(
            s.verify("/api/storage/u1/a b.png", &expires, &sig, later),
            Err(SignatureError::Expired)
        );
        let bumped = (expires.parse::<i64>().unwrap() + 10_000).to_string();
        assert_eq!(
            s.verify("/api/storage/u1/a b.png", &bumped, &sig, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            s.verify("/api/storage/u1/a b.png", "x", &sig, now),
            Err(SignatureError::Malformed)
        );
        let other = UrlSigner::new(&[7u8; 32], Duration::from_secs(3600)).unwrap();
        assert_eq!(
            other.verify("/api/storage/u1/a b.png", &expires, &sig, now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert_eq!(
            UrlSigner::new(b"short", Duration::from_secs(1))
                .unwrap_err()
                .kind(),
            ErrorKind::ConfigInvalid
        );
        assert!(!format!("{:?}", signer()).contains("0123"));
    }

    #[test]
    fn decoded_path_strips_origin_and_query() {
        assert_eq!(decoded_path("/api/storage/a%2Fb?x=1"), "/api/storage/a/b");
        assert_eq!(decoded_path("https://x.y/p/q#f"), "/p/q");
        assert_eq!(decoded_path("https://x.y"), "/");
    }
}
