//! [`NodeSettings`]: what some node types need from the process's configuration. The library
//! reads no environment; whoever builds the registry ([`crate::registry_with`]) fills this from
//! `nodetool_config::Settings` (`FONT_PATH`, `NODETOOL_WORKSPACE_DIR`, `FFMPEG_PATH`).

use std::path::PathBuf;
use std::time::Duration;

/// Settings of the built-in nodes. `Default` is what a process without configuration gets: the
/// bundled fonts only, no workspace (SQLite nodes refuse to run), `ffmpeg` from `PATH`.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `FONT_PATH`: a font file, or a folder searched for fonts by name, before the bundled
    /// fonts and the system font folders.
    pub font_path: Option<PathBuf>,
    /// `NODETOOL_WORKSPACE_DIR`: the folder `lib.sqlite.*` keeps databases in (per user). Unset,
    /// those nodes fail with a clear error, as NodeTool's do without a workspace.
    pub workspace_dir: Option<PathBuf>,
    /// `FFMPEG_PATH`: the `ffmpeg` binary the video nodes run (a bare name is looked up in
    /// `PATH`); `ffprobe` is looked up next to it.
    pub ffmpeg: PathBuf,
    /// Longest one ffmpeg run may take before it is killed.
    pub ffmpeg_timeout: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            font_path: None,
            workspace_dir: None,
            ffmpeg: PathBuf::from("ffmpeg"),
            ffmpeg_timeout: Duration::from_secs(600),
        }
    }
}
