//! [`GuardedHttp`]: the engine's [`HttpFetch`] for `http(s)://` media refs and HTTP nodes, with
//! an address guard against server-side request forgery on every hop.
//!
//! Each hop (the request, then every redirect) is checked the same way: the URL must be
//! `http`/`https`; its host is resolved once (an IP literal is taken as is, after the URL
//! parser's normalisation of forms like `0x7f.1` or `2130706433`); every address that is
//! loopback, private, link-local (cloud metadata), CGNAT, multicast, unspecified, reserved or
//! documentation — IPv4-mapped, -compatible, NAT64, 6to4 and Teredo IPv6 forms included — is
//! dropped; and the request connects only to the addresses that passed (the resolved list is
//! pinned in the client, so a second DNS answer cannot swap in another). Redirects are followed
//! by hand, so a `Location` pointing at `127.0.0.1` is refused before anything connects there —
//! the bypass upstream NodeTool had. No proxy is used (a proxy would resolve for us).
//!
//! `NODETOOL_HTTP_ALLOW_PRIVATE` turns the address rule off; `NODETOOL_HTTP_ALLOW_HOSTS` exempts
//! exact `host:port` pairs. Bodies are read as a stream and refused past the cap; the timeout
//! covers the whole fetch, redirects included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, Url};

use nodetool_core::{Error, ErrorKind, Result};
use nodetool_engine::media::{preview, HttpFetch, HttpRequest, HttpResponse};

/// The guard's knobs (`NODETOOL_HTTP_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPolicy {
    pub max_bytes: u64,
    pub timeout: Duration,
    pub max_redirects: u32,
    /// Allow every address (the guard is off).
    pub allow_private: bool,
    /// `(host, port)` pairs allowed whatever they resolve to; hosts lower-case.
    pub allow_hosts: Vec<(String, u16)>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
            allow_private: false,
            allow_hosts: Vec::new(),
        }
    }
}

/// Why an address may not be fetched, or `None` for a public unicast address. Pure.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address (where cloud metadata services answer)",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (192, 0, 0) => {
            "an IETF protocol address (192.0.0.0/24, where some metadata services answer)"
        }
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn embedded_v4(ip: Ipv6Addr, from: usize) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[from], o[from + 1], o[from + 2], o[from + 3])
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible) are IPv4 addresses in disguise.
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return blocked_v4(embedded_v4(ip, 12)).or(if s[5] == 0 {
            Some("a deprecated IPv4-compatible address")
        } else {
            None
        });
    }
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return blocked_v4(embedded_v4(ip, 12));
    }
    // 6to4 (2002::/16) embeds an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return blocked_v4(embedded_v4(ip, 2));
    }
    Some(match s[0] {
        0x2001 if s[1] == 0 => "a Teredo address (it tunnels to arbitrary IPv4 hosts)",
        0x2001 if s[1] == 0xdb8 => "a documentation address",
        0x0100 if s[1..4] == [0, 0, 0] => "a discard-only address",
        x if x & 0xfe00 == 0xfc00 => "a unique local (private) address",
        x if x & 0xffc0 == 0xfe80 => "a link-local address",
        x if x & 0xffc0 == 0xfec0 => "a site-local (private) address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// The host, port and literal address (if the host is one) of a URL we may fetch, or why not.
/// Pure: the first half of every hop's check, before any resolution.
pub fn fetch_target(url: &Url) -> Result<(String, u16, Option<IpAddr>)> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::PermissionDenied,
            format!("refused to fetch {}: {why}", preview(url.as_str())),
        )
        .with_operation("http.guard")
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(format!(
            "scheme `{}:` (only http and https)",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("credentials in the URL".to_owned()));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| refuse("no port".to_owned()))?;
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok((ip.to_string(), port, Some(IpAddr::V4(ip)))),
        Some(url::Host::Ipv6(ip)) => Ok((ip.to_string(), port, Some(IpAddr::V6(ip)))),
        Some(url::Host::Domain(d)) if !d.is_empty() => {
            Ok((d.trim_end_matches('.').to_ascii_lowercase(), port, None))
        }
        _ => Err(refuse("no host".to_owned())),
    }
}

/// The guarded client (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct GuardedHttp {
    policy: HttpPolicy,
}

impl GuardedHttp {
    pub fn new(policy: HttpPolicy) -> Self {
        Self { policy }
    }

    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }

    /// The addresses one hop may connect to: resolved once, each checked.
    async fn checked_addresses(
        &self,
        url: &Url,
        hop: u32,
        from: Option<&Url>,
    ) -> Result<Vec<SocketAddr>> {
        let (host, port, literal) = fetch_target(url)?;
        let exempt = self.policy.allow_private
            || self
                .policy
                .allow_hosts
                .iter()
                .any(|(h, p)| *h == host && *p == port);
        let addrs: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!("cannot resolve {host}: {e}"),
                    )
                    .with_operation("http.resolve")
                    .with_context("url", url.as_str())
                })?
                .collect(),
        };
        if exempt {
            return Ok(addrs);
        }
        let mut allowed = Vec::new();
        let mut refused = None;
        for addr in addrs {
            match blocked_reason(addr.ip()) {
                None => allowed.push(addr),
                Some(why) => {
                    refused.get_or_insert((addr.ip(), why));
                }
            }
        }
        if allowed.is_empty() {
            let what = match from {
                Some(prev) => format!(
                    "refused to follow the redirect (hop {hop}) from {} to {}",
                    preview(prev.as_str()),
                    preview(url.as_str())
                ),
                None => format!("refused to fetch {}", preview(url.as_str())),
            };
            let why = match refused {
                Some((ip, why)) => format!("{host} is {ip}, {why}"),
                None => format!("{host} has no address"),
            };
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{what}: {why}; nodes may fetch only public addresses (set \
                     NODETOOL_HTTP_ALLOW_PRIVATE=true, or list {host}:{port} in \
                     NODETOOL_HTTP_ALLOW_HOSTS, to allow it)"
                ),
            )
            .with_operation("http.guard"));
        }
        Ok(allowed)
    }

    async fn fetch_inner(
        &self,
        request: HttpRequest,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        let method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::invalid_input(format!("bad HTTP method {:?}", request.method)))?;
        let mut url = Url::parse(request.url.trim()).map_err(|e| {
            Error::invalid_input(format!("bad URL {}: {e}", preview(&request.url)))
                .with_operation("http.fetch")
        })?;
        let mut headers = HeaderMap::new();
        for (k, v) in &request.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::invalid_input(format!("bad header name {k:?}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| Error::invalid_input(format!("bad value for header {k}")))?;
            headers.append(name, value);
        }
        let mut method = method;
        let mut body = request.body;
        let mut previous: Option<Url> = None;
        let mut hop = 0;
        loop {
            let addrs = self.checked_addresses(&url, hop, previous.as_ref()).await?;
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(timeout)
                .user_agent(concat!("nodetool/", env!("CARGO_PKG_VERSION")));
            if let Some(url::Host::Domain(domain)) = url.host() {
                builder = builder.resolve_to_addrs(domain, &addrs);
            }
            let client = builder.build().map_err(|e| {
                Error::unexpected(format!("cannot build the HTTP client: {e}"))
                    .with_operation("http.fetch")
            })?;
            let mut req = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let response = req.send().await.map_err(|e| transport_error(&url, e))?;
            let status = response.status();
            if status.is_redirection() {
                if let Some(location) = response.headers().get(LOCATION) {
                    if hop >= self.policy.max_redirects {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "{} redirected more than {} times (NODETOOL_HTTP_MAX_REDIRECTS)",
                                preview(request.url.as_str()),
                                self.policy.max_redirects
                            ),
                        )
                        .with_operation("http.fetch"));
                    }
                    let location = location.to_str().map_err(|_| {
                        Error::invalid_input("a redirect's Location header is not text")
                            .with_operation("http.fetch")
                    })?;
                    let next = url.join(location).map_err(|e| {
                        Error::invalid_input(format!("bad redirect Location {location:?}: {e}"))
                            .with_operation("http.fetch")
                    })?;
                    // 303, and 301/302 after a POST, continue as GET without a body.
                    if status.as_u16() == 303
                        || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
                    {
                        method = Method::GET;
                        body = None;
                    }
                    // Credentials never follow a redirect to another origin.
                    if next.origin() != url.origin() {
                        headers.remove(reqwest::header::AUTHORIZATION);
                        headers.remove(reqwest::header::COOKIE);
                        headers.remove(reqwest::header::PROXY_AUTHORIZATION);
                    }
                    previous = Some(url);
                    url = next;
                    hop += 1;
                    continue;
                }
            }
            return read_body(response, &url, max_bytes).await;
        }
    }
}

fn transport_error(url: &Url, e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    Error::new(kind, format!("GET {} failed: {e}", preview(url.as_str())))
        .with_operation("http.fetch")
        .with_source(e)
}

async fn read_body(response: reqwest::Response, url: &Url, max_bytes: u64) -> Result<HttpResponse> {
    let too_large = |n: u64| {
        Error::new(
            ErrorKind::TooLarge,
            format!(
                "{} sends {n} bytes or more, over the limit of {max_bytes} bytes \
                 (NODETOOL_HTTP_MAX_BYTES)",
                preview(url.as_str())
            ),
        )
        .with_operation("http.fetch")
    };
    if let Some(len) = response.content_length() {
        if len > max_bytes {
            return Err(too_large(len));
        }
    }
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let final_url = response.url().to_string();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_error(url, e))?;
        if (body.len() + chunk.len()) as u64 > max_bytes {
            return Err(too_large((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status,
        url: final_url,
        headers,
        body: body.into(),
    })
}

#[async_trait]
impl HttpFetch for GuardedHttp {
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse> {
        let max_bytes = request
            .max_bytes
            .map_or(self.policy.max_bytes, |m| m.min(self.policy.max_bytes));
        let timeout = request
            .timeout
            .map_or(self.policy.timeout, |t| t.min(self.policy.timeout));
        let url = request.url.clone();
        match tokio::time::timeout(timeout, self.fetch_inner(request, max_bytes, timeout)).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "fetching {} took longer than {:.1}s (NODETOOL_HTTP_TIMEOUT_SECONDS)",
                    preview(&url),
                    timeout.as_secs_f64()
                ),
            )
            .with_operation("http.fetch")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        blocked_reason(s.parse().unwrap()).is_some()
    }

    #[test]
    fn every_internal_address_class_is_blocked() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "192.0.0.192",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(blocked(ip), "{ip} must be blocked");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!blocked(ip), "{ip} is public");
        }
    }

    #[test]
    fn url_forms_normalise_before_the_check() {
        for (url, ip) in [
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("http://017700000001/", "127.0.0.1"),
            ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ] {
            let (_, _, literal) = fetch_target(&Url::parse(url).unwrap()).unwrap();
            assert_eq!(literal, Some(ip.parse().unwrap()), "{url}");
            assert!(blocked_reason(literal.unwrap()).is_some());
        }
        for bad in [
            "ftp://x/",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
        ] {
            assert_eq!(
                fetch_target(&Url::parse(bad).unwrap()).unwrap_err().kind(),
                ErrorKind::PermissionDenied,
                "{bad}"
            );
        }
    }
}
