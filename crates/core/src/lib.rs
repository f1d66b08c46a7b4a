//! Domain types and contracts of the nodetool runtime.
//!
//! This crate does no I/O and names no backend: it holds the [`Error`] type every library crate
//! returns, the validated [`StorageKey`], and the traits that backends implement ([`Storage`],
//! [`NodeCache`], [`AssetStore`]). Everything else in the workspace depends on it; it depends on
//! nothing of ours.

pub mod assets;
pub mod cache;
pub mod error;
pub mod id;
pub mod key;
pub mod scope;
pub mod storage;
pub mod trace;
pub mod url;

pub use assets::{AssetPage, AssetQuery, AssetRecord, AssetStore};
pub use cache::{node_cache_key, CacheValue, NodeCache};
pub use error::{Error, ErrorKind, Result};
pub use id::{JobId, UserId};
pub use key::{StorageKey, StoragePrefix};
pub use scope::{KeyScope, ScopedStorage};
pub use storage::{
    ByteRange, ByteStream, Download, ObjectMeta, PutOptions, Storage, StorageCapabilities,
    StorageInfo,
};
