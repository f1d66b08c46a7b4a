//! File I/O on one dedicated blocking thread per transfer, joined to async code by a small
//! bounded channel. `tokio::fs` hops to the blocking pool for every read or write; at 1 MiB
//! chunks a dedicated thread halves the cost of streaming a large file, and the channel bound
//! keeps memory at a few chunks whatever the file size.

use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use futures::StreamExt;
use nodetool_core::storage::{ByteStream, Progress};
use nodetool_core::{Error, Result};

/// Chunk size of file streams.
pub const FILE_CHUNK: usize = 1024 * 1024;
/// Chunks buffered between the I/O thread and the async side.
const DEPTH: usize = 2;

/// Streams `len` bytes of `file` from `offset`, in [`FILE_CHUNK`] pieces.
pub fn read_stream(mut file: std::fs::File, offset: u64, len: u64) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        if offset > 0 {
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(Error::from(e).with_operation("file.read")));
                return;
            }
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(FILE_CHUNK as u64);
            // `read_to_end` into spare capacity skips zero-filling the chunk first, which
            // costs a whole extra pass over memory at these sizes; `take` stops it at `want`
            // without a probing read past the chunk.
            let mut buf = Vec::with_capacity(want as usize);
            if let Err(e) = (&mut file).take(want).read_to_end(&mut buf) {
                let _ = tx.blocking_send(Err(Error::from(e).with_operation("file.read")));
                return;
            }
            let filled = buf.len();
            if filled == 0 {
                let _ = tx.blocking_send(Err(Error::unexpected(format!(
                    "file ended {left} bytes early (truncated while being read)"
                ))
                .with_operation("file.read")));
                return;
            }
            left -= filled as u64;
            // The receiver is gone when the client stopped reading: stop too.
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Writes every chunk of `body` to `out` and flushes it; `finish` then runs on the same thread
/// (e.g. `File::sync_data`). Returns the bytes written. On a stream or I/O error the output is
/// left partial: the caller owns cleanup.
pub async fn write_stream<W, F>(out: W, mut body: ByteStream, finish: F) -> Result<u64>
where
    W: Write + Send + 'static,
    F: FnOnce(&mut W) -> std::io::Result<()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(DEPTH);
    let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut out = std::io::BufWriter::with_capacity(FILE_CHUNK, out);
        let mut written = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        let mut out = out.into_inner().map_err(|e| Error::from(e.into_error()))?;
        finish(&mut out)?;
        Ok(written)
    });
    let mut stream_error = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // The writer failed; its error is reported below.
                }
            }
            Err(e) => {
                stream_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::unexpected("file writer thread failed").with_source(e))?;
    match stream_error {
        Some(e) => Err(e),
        None => written,
    }
}

/// Copies the rest of `src` into `out` on a blocking thread with `std::io::copy`, which lets the
/// kernel copy between two files (`copy_file_range`) without a pass through our memory, in
/// steps so that `progress` hears of it. With `sync`, `out` is durable on return
/// (`fdatasync`), and a flusher thread writes back what is copied while the copy goes on, so
/// the final sync waits for the last step only instead of the whole file. Returns the bytes
/// copied. On an error the output is left partial: the caller owns cleanup.
pub async fn copy_file(
    mut src: std::fs::File,
    mut out: std::fs::File,
    progress: Option<Progress>,
    sync: bool,
) -> Result<u64> {
    const STEP: u64 = 16 * 1024 * 1024;
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut copied = 0;
        let mut flusher: Option<Flusher> = None;
        loop {
            let n = std::io::copy(&mut (&mut src).take(STEP), &mut out)?;
            if n == 0 {
                break;
            }
            copied += n;
            if let Some(progress) = &progress {
                progress(n);
            }
            if sync && n == STEP {
                match &flusher {
                    Some(f) => f.poke(),
                    // Only files larger than one step get a flusher thread.
                    None => flusher = Some(Flusher::start(&out)?),
                }
            }
        }
        if let Some(f) = flusher {
            f.stop()?;
        }
        if sync {
            out.sync_data()?;
        }
        Ok(copied)
    })
    .await
    .map_err(|e| Error::unexpected("file copy thread failed").with_source(e))?
}

/// A thread that runs `fdatasync` on a file whenever poked (pokes while it is busy coalesce),
/// so that writeback overlaps the writing.
struct Flusher {
    poke: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Flusher {
    fn start(file: &std::fs::File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let (poke, pokes) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("nodetool-flush".into())
            .spawn(move || {
                while pokes.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })?;
        let flusher = Self { poke, thread };
        flusher.poke();
        Ok(flusher)
    }

    fn poke(&self) {
        // Full: a sync is already due, which covers this step too.
        let _ = self.poke.try_send(());
    }

    /// Waits for the flusher's last sync; its error, if any, is the copy's.
    fn stop(self) -> std::io::Result<()> {
        drop(self.poke);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("flusher thread panicked")))
    }
}
