//! The built-in node library, one module per NodeTool namespace. Type and property names are
//! NodeTool's (nodetool-base), so workflows saved by NodeTool run unchanged.
//!
//! [`registry`] is every built-in type; the engine itself knows none (it runs whatever
//! `Registry` it is given).

use std::sync::Arc;

use serde_json::Value;

use nodetool_core::Result;

use nodetool_engine::node::{FnNode, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

pub mod ai;
pub mod asset;
pub mod asset_load;
pub mod base;
pub mod boolean;
pub mod catalog;
pub mod color_grading;
pub mod constant;
pub mod control;
pub mod data;
mod data_query;
pub mod dictionary;
pub mod docs;
pub mod draw_text;
pub mod dynamic_text;
pub mod folder;
pub mod grid;
pub mod http;
pub mod image;
pub mod io;
pub mod json;
pub mod list;
pub mod markdown;
pub mod math;
pub mod media;
pub mod pdf;
pub mod settings;
pub mod sqlite;
pub mod test;
pub mod test_helper;
pub mod text;
pub mod video;
mod video_subtitles;

pub use nodetool_engine::pyfmt::{python_json, write_python_layout};

pub use settings::NodeSettings;

/// Whether this build registers the `nodetool.test.*` nodes (cargo feature `test-nodes`, which
/// only test builds enable). Binaries log a warning when it is on.
pub const TEST_NODES: bool = cfg!(feature = "test-nodes");

/// A registry of every built-in node type, with default [`NodeSettings`] (bundled fonts only,
/// no workspace, `ffmpeg` from `PATH`).
pub fn registry() -> Registry {
    registry_with(&NodeSettings::default())
}

/// A registry of every built-in node type configured by `settings` (from the process's
/// `nodetool_config::Settings`: `FONT_PATH`, `NODETOOL_WORKSPACE_DIR`, `FFMPEG_PATH`).
pub fn registry_with(settings: &NodeSettings) -> Registry {
    let mut r = Registry::new();
    register_all_with(&mut r, settings);
    r
}

/// Registers every built-in node type with default [`NodeSettings`].
pub fn register_all(r: &mut Registry) {
    register_all_with(r, &NodeSettings::default());
}

/// Registers every built-in node type configured by `settings`.
pub fn register_all_with(r: &mut Registry, settings: &NodeSettings) {
    constant::register(r);
    io::register(r);
    text::register(r);
    dynamic_text::register(r);
    list::register(r);
    dictionary::register(r);
    boolean::register(r);
    math::register(r);
    control::register(r);
    base::register(r);
    image::register(r);
    asset::register(r);
    asset_load::register(r);
    // Crash, Allocate, Panic…: only in builds for tests (the feature is enabled by the
    // dev-dependencies of the crates whose tests run them), never in a production binary.
    if TEST_NODES {
        test::register(r);
    }
    // nodes-b
    json::register(r);
    color_grading::register(r);
    grid::register(r);
    data::register(r);
    sqlite::register(r, settings);
    pdf::register(r);
    video::register(r, settings);
    draw_text::register(r, settings);
    markdown::register(r);
    test_helper::register(r);
    folder::register(r);
    http::register(r);
    // The agents take the node types registered so far as their node tools.
    ai::register(r);
    // Last: marks what is still unimplemented (and not registered above), and aliases old
    // names of what is.
    catalog::register(r);
}

/// Registers a one-output function node.
pub(crate) fn fn_node(
    r: &mut Registry,
    spec: NodeSpec,
    f: impl Fn(&NodeInputs) -> Result<Value> + Send + Sync + 'static,
) {
    r.register(Arc::new(FnNode::new(spec, f)));
}

/// Python's `seq[start:stop:step]` index selection for a sequence of `len` items.
pub(crate) fn py_slice_indices(
    len: usize,
    start: Option<i64>,
    stop: Option<i64>,
    step: i64,
) -> Vec<usize> {
    let len = len as i64;
    let step = if step == 0 { 1 } else { step };
    let clamp = |i: i64, lo: i64, hi: i64| i.max(lo).min(hi);
    let norm = |i: i64| if i < 0 { i + len } else { i };
    let mut out = Vec::new();
    if step > 0 {
        let s = clamp(start.map_or(0, norm), 0, len);
        let e = clamp(stop.map_or(len, norm), 0, len);
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let s = clamp(start.map_or(len - 1, norm), -1, len - 1);
        let e = clamp(stop.map_or(-1, norm), -1, len - 1);
        let e = if stop.is_some_and(|x| x < -len) {
            -1
        } else {
            e
        };
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_like_python() {
        assert_eq!(py_slice_indices(5, Some(0), Some(3), 1), vec![0, 1, 2]);
        assert_eq!(py_slice_indices(5, Some(-2), None, 1), vec![3, 4]);
        assert_eq!(py_slice_indices(5, None, None, -2), vec![4, 2, 0]);
        assert_eq!(py_slice_indices(3, Some(10), None, 1), Vec::<usize>::new());
    }
}
