//! HTTPS for `nodetool serve --tls-cert/--tls-key`: rustls with the ring provider, chosen
//! explicitly (both ring and aws-lc-rs are in the dependency tree, so rustls cannot pick a
//! process default by itself), served by axum-server. TLS 1.2 and 1.3; ALPN offers h2 and
//! http/1.1. Usually a proxy terminates TLS instead; this is for serving HTTPS directly.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use nodetool_core::{Error, ErrorKind, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate chain and its key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig(axum_server::tls_rustls::RustlsConfig);

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

fn invalid(message: String, path: &Path) -> Error {
    Error::new(ErrorKind::ConfigInvalid, message)
        .with_operation("tls.load")
        .with_context("path", path.display())
}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). Every failure is `ConfigInvalid` with a message naming the file at fault: missing
    /// or unreadable, not PEM, no certificate or key inside, or a key that does not fit the
    /// certificate.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let read = |path: &Path, what: &str| {
            // The cause goes in the message only: as a source too, it would print twice.
            std::fs::read(path).map_err(|e| {
                invalid(
                    format!("cannot read the TLS {what} {}: {e}", path.display()),
                    path,
                )
            })
        };
        let cert_pem = read(cert_path, "certificate")?;
        let key_pem = read(key_path, "key")?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                invalid(
                    format!(
                        "cannot parse the TLS certificate {} as PEM: {e}",
                        cert_path.display()
                    ),
                    cert_path,
                )
            })?;
        if certs.is_empty() {
            return Err(invalid(
                format!(
                    "the TLS certificate file {} holds no PEM certificate",
                    cert_path.display()
                ),
                cert_path,
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            invalid(
                format!(
                    "the TLS key file {} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    key_path.display()
                ),
                key_path,
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                Error::new(ErrorKind::Unexpected, "cannot set up TLS")
                    .with_operation("tls.load")
                    .with_source(e)
            })?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                invalid(
                    format!(
                        "the TLS key {} does not fit the certificate {}: {e}",
                        key_path.display(),
                        cert_path.display()
                    ),
                    key_path,
                )
                .with_context("certificate", cert_path.display())
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(axum_server::tls_rustls::RustlsConfig::from_config(
            Arc::new(config),
        )))
    }
}

/// [`crate::serve`] over TLS: serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and lets open connections finish for up to `grace` before closing them.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: TlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<()> {
    serve_tls_with(
        listener,
        app,
        tls,
        crate::ConnLimits::default(),
        shutdown,
        grace,
    )
    .await
}

/// [`serve_tls`] with the header timeout of `limits` (the connection cap is not applied to
/// HTTPS yet).
pub async fn serve_tls_with(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: TlsConfig,
    limits: crate::ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<()> {
    let header_timeout = limits.header_timeout;
    let io_err = |e: std::io::Error| Error::from(e).with_operation("server.serve_tls");
    let listener = listener.into_std().map_err(io_err)?;
    let handle = axum_server::Handle::<SocketAddr>::new();
    let mut server = axum_server::tls_rustls::from_tcp_rustls(listener, tls.0)
        .map_err(io_err)?
        .handle(handle.clone());
    // The same head/idle timeout as plain HTTP (`SERVER_HEADER_TIMEOUT`).
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        handle.graceful_shutdown(Some(grace));
    });
    let result = server
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(io_err);
    stopper.abort();
    result
}
