//! Storage backends that live on this machine — [`MemoryStorage`] and [`FileStorage`] — and the
//! pieces every backend shares: URL building ([`join_url`], from core) and temp-storage expiry ([`gc`]).
//!
//! The remote backends (S3, Supabase) live in their own crates because they pull in SDKs; all of
//! them keep the one contract of [`nodetool_core::Storage`].

mod beneath;
pub mod blocking_io;
mod file;
pub mod gc;
mod memory;
mod read_cache;
pub mod signing;

pub use file::FileStorage;
pub use memory::MemoryStorage;
pub use nodetool_core::url::join_url;
pub use signing::UrlSigner;

/// Chunk size for streamed reads: large enough to amortise syscalls, small enough to keep memory
/// flat with many concurrent downloads.
pub(crate) const CHUNK: usize = 256 * 1024;
