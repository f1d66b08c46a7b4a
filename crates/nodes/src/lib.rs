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
pub mod constant;
pub mod control;
pub mod dictionary;
pub mod image;
pub mod io;
pub mod list;
pub mod math;
pub mod test;
pub mod text;

pub use nodetool_engine::pyfmt::{python_json, write_python_layout};

/// A registry of every built-in node type.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    register_all(&mut r);
    r
}

/// Registers every built-in node type.
pub fn register_all(r: &mut Registry) {
    constant::register(r);
    io::register(r);
    text::register(r);
    list::register(r);
    dictionary::register(r);
    boolean::register(r);
    math::register(r);
    control::register(r);
    base::register(r);
    image::register(r);
    asset::register(r);
    asset_load::register(r);
    test::register(r);
    // Last: the agents take the node types registered so far as their node tools.
    ai::register(r);
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
