//! A minimal memcached text-protocol client over one tokio `TcpStream`, and a small pool.
//!
//! Why not a crate: `memcache` is synchronous (every call would need `spawn_blocking`), and
//! `async-memcached` is one connection behind `&mut self` with no pool or deadlines, so we would
//! still have to write the pool and the "drop a connection whose reply was cut by a timeout" logic
//! around it. The five commands we need (`get`, `set`, `add`, `delete`, `incr`) are a few lines
//! each in the text protocol, which every memcached (and compatible server) speaks.
//!
//! Connections are only ever returned to the pool after a complete, well-formed exchange. A
//! timeout, I/O error or unexpected reply drops the connection (its stream may hold half a reply)
//! and also empties the idle list, since after a server restart every idle connection is dead.

use std::fmt;
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Longest status line we accept; anything longer is garbage, not memcached.
const MAX_LINE: u64 = 1024;

#[derive(Debug)]
pub(crate) enum ProtoError {
    Io(std::io::Error),
    /// The peer closed the connection mid-exchange.
    Closed,
    /// A reply that is not what the protocol allows here.
    Garbage(String),
    /// `SERVER_ERROR ...` or `CLIENT_ERROR ...`.
    Server(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Io(e) => write!(f, "i/o error: {e}"),
            ProtoError::Closed => f.write_str("server closed the connection"),
            ProtoError::Garbage(line) => write!(f, "unexpected reply {line:?}"),
            ProtoError::Server(line) => write!(f, "server error {line:?}"),
        }
    }
}

impl std::error::Error for ProtoError {}

impl From<std::io::Error> for ProtoError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Closed
        } else {
            ProtoError::Io(e)
        }
    }
}

type PResult<T> = Result<T, ProtoError>;

/// Outcome of a storage command (`set`, `add`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    Stored,
    /// `add` of an existing key.
    NotStored,
}

#[derive(Debug)]
pub(crate) struct Conn {
    stream: BufStream<TcpStream>,
}

impl Conn {
    pub(crate) async fn connect(host: &str, port: u16) -> PResult<Self> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufStream::new(stream),
        })
    }

    async fn line(&mut self) -> PResult<String> {
        let mut buf = Vec::with_capacity(64);
        let n = (&mut self.stream)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Err(ProtoError::Closed);
        }
        let Some(line) = buf.strip_suffix(b"\r\n") else {
            return Err(ProtoError::Garbage(lossy(&buf)));
        };
        String::from_utf8(line.to_vec()).map_err(|e| ProtoError::Garbage(lossy(e.as_bytes())))
    }

    /// `get`: the value, or `None` on a miss. A value over `max_len` is refused as garbage: we
    /// never write one, so it is not ours, and reading it would let a peer make us buffer gigabytes.
    pub(crate) async fn get(&mut self, key: &str, max_len: usize) -> PResult<Option<Vec<u8>>> {
        self.stream
            .write_all(format!("get {key}\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        let line = self.line().await?;
        if line == "END" {
            return Ok(None);
        }
        let len = match line.split(' ').collect::<Vec<_>>().as_slice() {
            ["VALUE", k, _flags, len] if *k == key => len.parse::<usize>().ok(),
            _ => None,
        };
        let Some(len) = len.filter(|l| *l <= max_len) else {
            return Err(error_or_garbage(line));
        };
        let mut data = vec![0u8; len + 2];
        self.stream.read_exact(&mut data).await?;
        if !data.ends_with(b"\r\n") {
            return Err(ProtoError::Garbage("value not followed by CRLF".into()));
        }
        data.truncate(len);
        let end = self.line().await?;
        if end != "END" {
            return Err(ProtoError::Garbage(end));
        }
        Ok(Some(data))
    }

    /// `set` (or `add` when `add_only`).
    pub(crate) async fn store(
        &mut self,
        add_only: bool,
        key: &str,
        data: &[u8],
        exptime: u64,
    ) -> PResult<Stored> {
        let cmd = if add_only { "add" } else { "set" };
        let header = format!("{cmd} {key} 0 {exptime} {}\r\n", data.len());
        self.stream.write_all(header.as_bytes()).await?;
        self.stream.write_all(data).await?;
        self.stream.write_all(b"\r\n").await?;
        self.stream.flush().await?;
        let line = self.line().await?;
        match line.as_str() {
            "STORED" => Ok(Stored::Stored),
            "NOT_STORED" => Ok(Stored::NotStored),
            _ => Err(error_or_garbage(line)),
        }
    }

    /// `delete`: true if something was deleted.
    pub(crate) async fn delete(&mut self, key: &str) -> PResult<bool> {
        self.stream
            .write_all(format!("delete {key}\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        let line = self.line().await?;
        match line.as_str() {
            "DELETED" => Ok(true),
            "NOT_FOUND" => Ok(false),
            _ => Err(error_or_garbage(line)),
        }
    }

    /// `incr key 1`: the new value, or `None` when the key does not exist.
    pub(crate) async fn incr(&mut self, key: &str) -> PResult<Option<u64>> {
        self.stream
            .write_all(format!("incr {key} 1\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        let line = self.line().await?;
        if line == "NOT_FOUND" {
            return Ok(None);
        }
        match line.parse::<u64>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(error_or_garbage(line)),
        }
    }
}

fn error_or_garbage(line: String) -> ProtoError {
    if line.starts_with("SERVER_ERROR") || line.starts_with("CLIENT_ERROR") || line == "ERROR" {
        ProtoError::Server(line)
    } else {
        ProtoError::Garbage(line)
    }
}

fn lossy(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    s.into_owned()
}

/// At most `size` connections to one server; idle ones are reused.
#[derive(Debug)]
pub(crate) struct Pool {
    host: String,
    port: u16,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl Pool {
    pub(crate) fn new(host: String, port: u16, size: usize) -> Self {
        Self {
            host,
            port,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
        }
    }

    /// A connection: an idle one, or a new one. The caller bounds this with its deadline.
    pub(crate) async fn acquire(&self) -> PResult<Pooled<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ProtoError::Garbage("pool closed".into()))?;
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let conn = match idle {
            Some(conn) => conn,
            None => Conn::connect(&self.host, self.port).await?,
        };
        Ok(Pooled {
            pool: self,
            conn,
            permit,
        })
    }

    /// Drops every idle connection (called after a failure: they are likely dead too).
    pub(crate) fn discard_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// A checked-out connection. Dropped without [`Pooled::release`] (error, timeout, cancelled
/// future), its connection is closed rather than reused.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Conn,
    permit: SemaphorePermit<'a>,
}

impl Pooled<'_> {
    pub(crate) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Returns the connection to the idle list after a complete exchange.
    pub(crate) fn release(self) {
        let Pooled { pool, conn, permit } = self;
        if let Ok(mut idle) = pool.idle.lock() {
            idle.push(conn);
        }
        // Free the slot only once the connection is back, so `size` bounds open connections.
        drop(permit);
    }
}
