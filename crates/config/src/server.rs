//! The HTTP server's hardening settings (the "HTTP server" block of the registry), read into one
//! plain struct `nodetool serve` hands to the server crate.

use std::path::PathBuf;
use std::time::Duration;

use nodetool_core::Result;

use crate::parse::{self, Parsed};
use crate::settings::Reader;

/// `ALLOWED_ORIGINS` … `SERVER_MAX_CONNECTIONS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Origins (`scheme://host[:port]`, lower-cased, default port dropped) that may call
    /// state-changing routes and `/ws` under `AUTH_PROVIDER` none/local besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Host (lower-cased, no port) that serves user content as a separate origin: requests for
    /// it may get active content types (HTML, SVG, ...) inline.
    pub content_domain: Option<String>,
    pub ws_max_message_bytes: u64,
    pub max_json_body_bytes: u64,
    /// Bounds a request head being sent and an idle keep-alive connection.
    pub header_timeout: Duration,
    /// A request body must deliver 16 KiB in every window this long (`SERVER_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    /// Folder of example workflows for `/api/workflows/examples` (`NODETOOL_EXAMPLES_DIR`).
    pub examples_dir: Option<PathBuf>,
    /// Supabase's public anon key, served to the web app by `/api/config` (`SUPABASE_ANON_KEY`).
    pub supabase_anon_key: Option<String>,
}

impl ServerSettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self> {
        Ok(Self {
            allowed_origins: r.get("ALLOWED_ORIGINS", origins)?.unwrap_or_default(),
            content_domain: r.get("NODETOOL_CONTENT_DOMAIN", host)?,
            ws_max_message_bytes: r.require("NODETOOL_WS_MAX_MESSAGE_BYTES", positive_size)?,
            max_json_body_bytes: r.require("NODETOOL_MAX_JSON_BODY_BYTES", positive_size)?,
            header_timeout: r.require("SERVER_HEADER_TIMEOUT", positive_seconds)?,
            body_timeout: r.require("SERVER_BODY_TIMEOUT", positive_seconds)?,
            max_connections: r.get("SERVER_MAX_CONNECTIONS", parse::count)?,
            examples_dir: r.get("NODETOOL_EXAMPLES_DIR", |raw| Ok(parse::path(raw, r.home)))?,
            supabase_anon_key: r.get("SUPABASE_ANON_KEY", |raw| Ok(raw.trim().to_owned()))?,
        })
    }
}

fn positive_size(raw: &str) -> Parsed<u64> {
    match parse::size(raw)? {
        0 => Err("must be at least 1 byte".to_owned()),
        n => Ok(n),
    }
}

fn positive_seconds(raw: &str) -> Parsed<Duration> {
    let d = parse::seconds(raw)?;
    if d.is_zero() {
        return Err("must be at least 1 second".to_owned());
    }
    Ok(d)
}

/// A bare host name as a browser puts it in `Host` (no scheme, path or port).
fn host(raw: &str) -> Parsed<String> {
    let h = raw.trim().to_ascii_lowercase();
    if h.is_empty() || h.contains(['/', ':', ' ', '@']) {
        return Err("is not a bare host name (no scheme, port or path)".to_owned());
    }
    Ok(h)
}

/// The canonical form of a browser `Origin`: `scheme://host[:port]`, lower-case, without the
/// scheme's default port. `None` for anything else (`null`, paths, other schemes).
pub fn normalize_origin(raw: &str) -> Option<String> {
    let raw = raw.trim().to_ascii_lowercase();
    let (scheme, rest) = raw.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    // `[::1]:8080`, `host:8080`, `host`.
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.is_empty() && !p.contains(']') => {
            p.parse::<u16>().ok()?;
            (h, Some(p))
        }
        _ => (rest, None),
    };
    Some(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

fn origins(raw: &str) -> Parsed<Vec<String>> {
    parse::list(raw)?
        .into_iter()
        .map(|item| {
            normalize_origin(&item).ok_or_else(|| {
                format!("has `{item}`, which is not an origin like https://app.example.com:8443")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalize() {
        assert_eq!(
            normalize_origin("HTTP://LocalHost:80").as_deref(),
            Some("http://localhost")
        );
        assert_eq!(
            normalize_origin("https://app.example.com:8443/").as_deref(),
            Some("https://app.example.com:8443")
        );
        assert_eq!(
            normalize_origin("http://[::1]:7777").as_deref(),
            Some("http://[::1]:7777")
        );
        assert_eq!(
            normalize_origin("http://[::1]").as_deref(),
            Some("http://[::1]")
        );
        assert_eq!(normalize_origin("null"), None);
        assert_eq!(normalize_origin("file:///x"), None);
        assert_eq!(normalize_origin("https://a.com/path"), None);
        assert!(origins("https://a.com, http://localhost:3000").is_ok());
        assert!(origins("a.com").is_err());
        assert!(host("cdn.example.com").is_ok());
        assert!(host("https://cdn.example.com").is_err());
        assert!(positive_size("0").is_err());
    }
}
