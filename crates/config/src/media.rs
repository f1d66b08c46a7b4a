//! The media-ref and node-HTTP settings (the last block of the registry), read into one plain
//! struct the runtime turns into the engine's `MediaPolicy` and the guarded HTTP client.

use std::path::PathBuf;
use std::time::Duration;

use nodetool_core::Result;

use crate::parse::{self, Parsed};
use crate::settings::Reader;

/// `NODETOOL_DATA_URI_MAX_BYTES` … `NODETOOL_HTTP_ALLOW_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    pub data_uri_max_bytes: u64,
    pub image_max_pixels: u64,
    /// `NODETOOL_FILE_ROOTS`, `~` expanded; empty when unset.
    pub file_roots: Vec<PathBuf>,
    pub http_max_bytes: u64,
    pub http_timeout: Duration,
    pub http_max_redirects: u32,
    pub http_allow_private: bool,
    /// `host:port` pairs, host lower-cased.
    pub http_allow_hosts: Vec<(String, u16)>,
}

impl MediaSettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self> {
        Ok(Self {
            data_uri_max_bytes: r.require("NODETOOL_DATA_URI_MAX_BYTES", parse::size)?,
            image_max_pixels: r.require("NODETOOL_IMAGE_MAX_PIXELS", parse::count)? as u64,
            file_roots: r
                .get("NODETOOL_FILE_ROOTS", parse::list)?
                .unwrap_or_default()
                .iter()
                .map(|p| parse::path(p, r.home))
                .collect(),
            http_max_bytes: r.require("NODETOOL_HTTP_MAX_BYTES", parse::size)?,
            http_timeout: r.require("NODETOOL_HTTP_TIMEOUT_SECONDS", parse::seconds)?,
            http_max_redirects: r.require("NODETOOL_HTTP_MAX_REDIRECTS", redirects)?,
            http_allow_private: r.require("NODETOOL_HTTP_ALLOW_PRIVATE", parse::boolean)?,
            http_allow_hosts: r
                .get("NODETOOL_HTTP_ALLOW_HOSTS", host_ports)?
                .unwrap_or_default(),
        })
    }
}

fn redirects(raw: &str) -> Parsed<u32> {
    let n = parse::integer(raw)?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= 50)
        .ok_or_else(|| "is not a redirect count from 0 to 50".to_owned())
}

fn host_ports(raw: &str) -> Parsed<Vec<(String, u16)>> {
    parse::list(raw)?
        .into_iter()
        .map(|item| {
            let (host, port) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("has `{item}`, which is not host:port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("has `{item}`, whose port is not 1-65535"))?;
            if host.is_empty() {
                return Err(format!("has `{item}`, which has no host"));
            }
            Ok((host.to_ascii_lowercase(), port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_lists() {
        assert_eq!(
            host_ports("127.0.0.1:8080, [::1]:9, Internal.Svc:443").unwrap(),
            vec![
                ("127.0.0.1".to_owned(), 8080),
                ("::1".to_owned(), 9),
                ("internal.svc".to_owned(), 443)
            ]
        );
        assert!(host_ports("localhost").is_err());
        assert!(host_ports("h:0").is_err());
        assert!(host_ports(":80").is_err());
        assert_eq!(redirects("0").unwrap(), 0);
        assert!(redirects("-1").is_err());
    }
}
