//! `/ws/terminal`: an interactive shell on a PTY, over a WebSocket.
//!
//! **Gating.** The route answers 404 unless `NODETOOL_ENABLE_TERMINAL_WS` is true and `ENV` is
//! not `production` ([`crate::ServerOptions::terminal`]), whatever the caller sends.
//!
//! **Auth, always.** With `static` or `supabase` the caller needs a valid token
//! (`Authorization: Bearer` or `?api_key=`), else 401. With `none`/`local` there is no token to
//! check, so only a client that proves it is local may open a shell: the TCP peer must be a
//! loopback address, the request must carry no `Forwarded`/`X-Forwarded-For`/`X-Real-IP` header
//! (a reverse proxy on the same host would otherwise make every client look local), and an
//! `Origin` header, when present, must be the server's own or in `ALLOWED_ORIGINS` (checked by
//! [`crate::guard`] for every `/ws*` route; here it must also name localhost, 127.0.0.0/8 or
//! [::1]), so a web page in the user's browser cannot open one. Anything else is 403. Behind a proxy, use `static` or
//! `supabase`.
//!
//! **The shell.** `$SHELL -l` (as the settings' environment gives it; else `/bin/bash`, else
//! `/bin/sh`) on a new PTY, as the leader of a new session, in `HOME`. Its environment is built
//! from nothing: `PATH` (a fixed minimal one), `HOME`, `TERM=xterm-256color`, `SHELL`, `LANG`,
//! `USER`/`LOGNAME` when known; then any name that is a secret setting or looks like one
//! (`*_KEY`, `*_TOKEN`, `*_SECRET`, `*PASSWORD*`) is dropped. The server's own environment, and
//! so its secrets, never reach the shell.
//!
//! **Protocol.** Client → server: binary frames are stdin bytes; a text frame that is the JSON
//! object `{"type":"resize","cols":C,"rows":R}` resizes the terminal, `{"type":"input","data":S}`
//! writes `S`, and any other text frame is written as it is (send keystrokes as binary frames to
//! avoid any ambiguity). Server → client: binary frames of raw terminal output (bytes, not
//! necessarily whole UTF-8 characters).
//!
//! **End.** When the shell exits, the rest of its output is sent, every process left in its
//! session is killed, and the socket is closed with code `4000 + status` (`4000 + 128 + signal`
//! when a signal killed it) and a reason such as `shell exited with status 0`. When the client
//! closes the socket (or it drops), the session gets SIGHUP, then after a short grace SIGKILL:
//! every process in the shell's session, background jobs included, not only its process group.
//! Processes that left the session (`setsid`) are out of reach, as with any terminal.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::{header, request::Parts, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use nodetool_config::{registry, Settings};
use nodetool_core::{Error, ErrorKind, UserId};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::auth::{websocket_user, Authenticator};
use crate::error::ApiError;
use crate::metrics::StreamKind;
use crate::AppState;

/// The `PATH` the shell starts with.
pub const SHELL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Time the session gets between SIGHUP and SIGKILL when the client leaves.
const HANGUP_GRACE: Duration = Duration::from_secs(1);
/// Time the rest of the output gets to arrive after the shell exits.
const DRAIN: Duration = Duration::from_secs(2);
/// Largest client frame (keystrokes and pastes, not file transfers).
const MAX_FRAME: usize = 1 << 20;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws/terminal", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct TerminalQuery {
    api_key: Option<String>,
}

/// The TCP peer, when the server was started with connect info.
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

async fn upgrade(
    State(state): State<AppState>,
    Peer(peer): Peer,
    Query(q): Query<TerminalQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if !state.options.terminal {
        return ApiError::not_found("no such route").into_response();
    }
    let user = match &state.auth {
        Authenticator::Local => match local_refusal(peer, &headers) {
            None => UserId::local(),
            Some(why) => {
                tracing::warn!(?peer, why, "terminal refused");
                return ApiError::forbidden(format!(
                    "the terminal needs a local client with AUTH_PROVIDER=local: {why}"
                ))
                .into_response();
            }
        },
        auth => match websocket_user(auth, &headers, q.api_key).await {
            Ok(user) => user,
            Err(response) => return response,
        },
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| session(state, user.to_string(), socket))
}

/// Why a tokenless (local provider) request may not open a shell, or `None` if it may.
fn local_refusal(peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<&'static str> {
    match peer {
        Some(addr) if is_loopback(addr.ip()) => {}
        Some(_) => return Some("the client is not on a loopback address"),
        None => return Some("the client address is unknown"),
    }
    if ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h))
    {
        return Some("the request came through a proxy");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let local = origin.to_str().ok().is_some_and(origin_is_loopback);
        if !local {
            return Some("the Origin is not a local page");
        }
    }
    None
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // `::ffff:127.0.0.1` from a dual-stack socket.
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `http(s)://localhost|127.x.y.z|[::1][:port]`.
fn origin_is_loopback(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// True for names that must never reach the shell: secret settings, and anything named like a
/// credential.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    registry::find(&upper).is_some_and(|d| d.secret)
        || ["_KEY", "_TOKEN", "_SECRET"]
            .iter()
            .any(|s| upper.ends_with(s))
        || upper.contains("PASSWORD")
}

/// What to run and with which environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellSpec {
    pub program: PathBuf,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

impl ShellSpec {
    /// The shell for these settings (see the module docs); reads no environment of its own.
    pub fn from_settings(settings: &Settings) -> Self {
        let lookup = |name: &str| settings.lookup(name).map(|(v, _)| v.to_owned());
        let program = lookup("SHELL")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.exists())
            .or_else(|| {
                ["/bin/bash", "/bin/sh"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
            })
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let cwd = settings
            .home()
            .filter(|h| h.is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut env = vec![
            ("PATH".to_owned(), SHELL_PATH.to_owned()),
            ("HOME".to_owned(), cwd.display().to_string()),
            ("TERM".to_owned(), "xterm-256color".to_owned()),
            ("SHELL".to_owned(), program.display().to_string()),
            (
                "LANG".to_owned(),
                lookup("LANG").unwrap_or_else(|| "C.UTF-8".to_owned()),
            ),
        ];
        for name in ["USER", "LOGNAME"] {
            if let Some(v) = lookup(name) {
                env.push((name.to_owned(), v));
            }
        }
        env.retain(|(name, _)| !is_secret_name(name));
        Self { program, cwd, env }
    }
}

/// A running shell: the session it leads is killed when this is dropped, whatever happened.
struct Shell {
    child: tokio::process::Child,
    /// The shell's pid, which is also its session id.
    sid: Pid,
}

impl Shell {
    fn spawn(spec: &ShellSpec) -> nodetool_core::Result<(Self, pty_process::Pty)> {
        let err = |what: &'static str| {
            move |e: pty_process::Error| {
                Error::new(ErrorKind::Unavailable, format!("cannot {what}"))
                    .with_operation("terminal.spawn")
                    .with_context("shell", spec.program.display())
                    .with_source(e)
            }
        };
        let (pty, pts) = pty_process::open().map_err(err("open a pty"))?;
        pty.resize(pty_process::Size::new(24, 80))
            .map_err(err("size the pty"))?;
        let child = pty_process::Command::new(&spec.program)
            .arg("-l")
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&spec.cwd)
            .kill_on_drop(true)
            .spawn(pts)
            .map_err(err("start the shell"))?;
        let pid = child.id().ok_or_else(|| {
            Error::new(ErrorKind::Unexpected, "the shell exited before it started")
                .with_operation("terminal.spawn")
        })?;
        let sid = Pid::from_raw(i32::try_from(pid).map_err(|_| {
            Error::new(ErrorKind::Unexpected, "pid out of range").with_operation("terminal.spawn")
        })?);
        Ok((Self { child, sid }, pty))
    }

    /// Resolves once the shell has exited, without reaping it: while it is an unreaped zombie
    /// its pid (the session id) cannot be reused, so sweeping the session cannot hit strangers.
    fn exited(&self) -> tokio::task::JoinHandle<()> {
        let pid = self.sid;
        tokio::task::spawn_blocking(move || {
            use nix::sys::wait::{waitid, Id, WaitPidFlag};
            loop {
                match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "waitid on the shell failed");
                        return;
                    }
                    Ok(_) => return,
                }
            }
        })
    }

    /// Reaps the shell and returns its close code and reason.
    async fn reap(&mut self) -> (u16, String) {
        use std::os::unix::process::ExitStatusExt;
        match self.child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => (
                    4000 + (code & 0xff) as u16,
                    format!("shell exited with status {code}"),
                ),
                (None, Some(sig)) => (
                    4000 + 128 + (sig & 0x7f) as u16,
                    format!("shell killed by signal {sig}"),
                ),
                (None, None) => (1011, "shell ended".to_owned()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot reap the shell");
                (1011, "shell ended".to_owned())
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        signal_session(self.sid, Signal::SIGKILL);
    }
}

/// Sends `signal` to every live process in session `sid`; returns how many were signalled.
pub fn signal_session(sid: Pid, signal: Signal) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((state, session)) = stat_state_and_session(pid) {
            if session == sid.as_raw()
                && state != 'Z'
                && nix::sys::signal::kill(Pid::from_raw(pid), signal).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

/// (state, session id) from `/proc/{pid}/stat`.
fn stat_state_and_session(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` may hold spaces and parentheses: the fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let session = fields.nth(2)?.parse().ok()?;
    Some((state, session))
}

/// A parsed client text frame.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Bytes(Vec<u8>),
    Resize { cols: u16, rows: u16 },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u16, rows: u16 },
    Input { data: String },
}

fn parse_text(text: &str) -> Input {
    match serde_json::from_str::<Control>(text) {
        Ok(Control::Resize { cols, rows }) if cols > 0 && rows > 0 => Input::Resize { cols, rows },
        Ok(Control::Input { data }) => Input::Bytes(data.into_bytes()),
        _ => Input::Bytes(text.as_bytes().to_vec()),
    }
}

async fn session(state: AppState, user: String, socket: WebSocket) {
    let _open = state.metrics.open_stream(StreamKind::Terminal);
    let spec = ShellSpec::from_settings(state.resources.settings());
    let (mut sink, mut incoming) = socket.split();
    let (mut shell, pty) = match Shell::spawn(&spec) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "terminal: cannot start the shell");
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1011,
                    reason: "cannot start the shell".into(),
                })))
                .await;
            return;
        }
    };
    tracing::info!(user = %user, pid = shell.sid.as_raw(), shell = %spec.program.display(), "terminal opened");
    let (mut pty_out, mut pty_in) = pty.into_split();

    // One writer owns the socket's sink; output and the final close frame go through it.
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let last = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let out_tx = tx.clone();
    let mut output = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match pty_out.read(&mut buf).await {
                // EIO: every holder of the terminal's other end is gone.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if out_tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Reading the socket and writing the pty in one task: a shell that does not read its input
    // holds back the client, never the output or the exit.
    let mut input = tokio::spawn(async move {
        while let Some(Ok(frame)) = incoming.next().await {
            let data = match frame {
                Message::Binary(b) => Input::Bytes(b.to_vec()),
                Message::Text(t) => parse_text(t.as_str()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            match data {
                Input::Bytes(bytes) => {
                    if pty_in.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Input::Resize { cols, rows } => {
                    if let Err(e) = pty_in.resize(pty_process::Size::new(rows, cols)) {
                        tracing::debug!(error = %e, "terminal resize failed");
                    }
                }
            }
        }
    });

    let mut exited = shell.exited();
    tokio::select! {
        _ = &mut exited => {
            // Background jobs must not outlive the terminal (nor keep its output open).
            signal_session(shell.sid, Signal::SIGKILL);
            let (code, reason) = shell.reap().await;
            if tokio::time::timeout(DRAIN, &mut output).await.is_err() {
                output.abort();
            }
            let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: reason.clone().into() }))).await;
            input.abort();
            tracing::info!(user = %user, pid = shell.sid.as_raw(), %reason, "terminal closed by the shell");
        }
        _ = &mut input => {
            signal_session(shell.sid, Signal::SIGHUP);
            if tokio::time::timeout(HANGUP_GRACE, &mut exited).await.is_err() {
                tracing::debug!(pid = shell.sid.as_raw(), "shell ignored SIGHUP; killing its session");
            }
            signal_session(shell.sid, Signal::SIGKILL);
            // Should /proc not show the session, the shell itself still goes.
            let _ = shell.child.start_kill();
            let (_, reason) = shell.reap().await;
            output.abort();
            tracing::info!(user = %user, pid = shell.sid.as_raw(), %reason, "terminal closed by the client");
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(DRAIN, writer).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for name in [
            "SERVER_AUTH_TOKEN",
            "S3_SECRET_ACCESS_KEY",
            "SUPABASE_KEY",
            "SUPABASE_JWT_SECRET",
            "OPENAI_API_KEY",
            "github_token",
            "DB_PASSWORD",
            "PGPASSWORD",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["PATH", "HOME", "TERM", "LANG", "SHELL", "USER", "KEYBOARD"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn origins() {
        for o in [
            "http://localhost:7777",
            "http://127.0.0.1",
            "https://127.1.2.3:8443/x",
            "http://[::1]:7777",
            "http://LOCALHOST",
        ] {
            assert!(origin_is_loopback(o), "{o}");
        }
        for o in [
            "null",
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "file://localhost",
            "http://[::2]",
        ] {
            assert!(!origin_is_loopback(o), "{o}");
        }
    }

    #[test]
    fn local_clients_only_without_a_proxy_or_foreign_origin() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(local_refusal(Some(local), &h), None);
        assert_eq!(local_refusal(Some(mapped), &h), None);
        assert!(local_refusal(Some(remote), &h).is_some());
        assert!(local_refusal(None, &h).is_some());
        h.insert(header::ORIGIN, "http://localhost:7777".parse().unwrap());
        assert_eq!(local_refusal(Some(local), &h), None);
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(local_refusal(Some(local), &h).is_some());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        assert!(local_refusal(Some(local), &h).is_some());
    }

    #[test]
    fn text_frames() {
        assert_eq!(
            parse_text(r#"{"type":"resize","cols":120,"rows":40}"#),
            Input::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert_eq!(
            parse_text(r#"{"type":"input","data":"ls\n"}"#),
            Input::Bytes(b"ls\n".to_vec())
        );
        for raw in [
            "ls -la\n",
            r#"{"type":"resize","cols":0,"rows":40}"#,
            r#"{"type":"other"}"#,
            "{not json",
        ] {
            assert_eq!(
                parse_text(raw),
                Input::Bytes(raw.as_bytes().to_vec()),
                "{raw}"
            );
        }
    }

    #[test]
    fn the_environment_is_built_from_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let env: std::collections::BTreeMap<String, String> = [
            ("HOME", dir.path().to_str().unwrap()),
            ("SERVER_AUTH_TOKEN", "tok-secret"),
            ("S3_SECRET_ACCESS_KEY", "s3-secret"),
            ("LANG", "en_US.UTF-8"),
            ("USER", "ada"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings =
            Settings::load(&nodetool_config::Sources::new(env, dir.path().join("cfg"))).unwrap();
        let spec = ShellSpec::from_settings(&settings);
        let names: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["PATH", "HOME", "TERM", "SHELL", "LANG", "USER"],
            "{spec:?}"
        );
        assert_eq!(spec.cwd, dir.path());
        assert!(
            spec.env.iter().all(|(_, v)| !v.contains("secret")),
            "{spec:?}"
        );
    }

    #[test]
    fn stat_parsing_reads_our_own_session() {
        // Our own process: state is R or S, the session is whatever the test runner gave us.
        let me = std::process::id() as i32;
        let (state, session) = stat_state_and_session(me).unwrap();
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert_eq!(session, nix::unistd::getsid(None).unwrap().as_raw());
    }
}
