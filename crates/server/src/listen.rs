//! The plain-HTTP accept loop behind [`crate::serve`]: hyper with a header-read timeout and a
//! cap on open connections, so idle or slowloris clients cannot take every file descriptor.
//!
//! - `header_timeout` (`SERVER_HEADER_TIMEOUT`): a client must finish sending a request head
//!   within it, and an idle keep-alive connection is closed after it (hyper's HTTP/1 timer
//!   starts whenever the connection waits for a request head).
//! - `max_connections` (`SERVER_MAX_CONNECTIONS`): at the cap the loop stops accepting (new
//!   connections wait in the kernel's backlog) until one closes. A WebSocket keeps its slot
//!   until it closes: the slot lives in the socket wrapper, not the connection task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// Connection limits of [`crate::serve_with`].
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl ConnLimits {
    /// `SERVER_HEADER_TIMEOUT` and `SERVER_MAX_CONNECTIONS` (unset: 3/4 of the open-file
    /// limit, so accept never fails for lack of descriptors and the database, storage and
    /// workers keep some).
    pub fn from_settings(settings: &nodetool_config::Settings) -> Self {
        Self {
            header_timeout: settings.server.header_timeout,
            max_connections: settings
                .server
                .max_connections
                .unwrap_or_else(default_max_connections),
        }
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(15),
            max_connections: default_max_connections(),
        }
    }
}

/// 3/4 of the soft `RLIMIT_NOFILE` (at least 16).
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX).max(16)
}

/// Raises the soft open-file limit to the hard one (the default soft limit, often 1024, is
/// far below what a server with many clients needs). Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok(hard.max(soft))
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection task holds a receiver; shutdown waits until all are dropped.
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE/ENFILE and aborted handshakes: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Slotted {
            inner: stream,
            _slot: permit,
        });
        let service = app.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                req.map(axum::body::Body::new)
            },
        );
        let service = TowerToHyperService::new(service);
        let close_rx = close_rx.clone();
        let mut stop_rx = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder.http2().enable_connect_protocol();
            let conn = builder.serve_connection_with_upgrades(io, service);
            let mut conn = std::pin::pin!(conn);
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::trace!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop_rx.changed() => {
                        conn.as_mut().graceful_shutdown();
                        if changed.is_err() {
                            // The loop is gone; keep serving until the connection ends.
                            let _ = conn.as_mut().await;
                            break;
                        }
                    }
                }
            }
            drop(close_rx);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(close_rx);
    close_tx.closed().await;
    drop(stop_tx);
    Ok(())
}

pin_project_lite::pin_project! {
    /// A socket that holds one connection slot until it is dropped (also after an upgrade).
    struct Slotted {
        #[pin]
        inner: TcpStream,
        _slot: OwnedSemaphorePermit,
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
