//! The worker's `update` frames as engine events. Each carries a serialized NodeTool message
//! discriminated by its `type`; the ones with an engine counterpart are posted, the rest logged.

use rmpv::Value as Mp;

use nodetool_engine::events::Severity;
use nodetool_engine::ProcessingContext;

use crate::convert::to_json;
use crate::frame::map_get;

fn text(data: &Mp, key: &str) -> String {
    map_get(data, key)
        .and_then(Mp::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn severity(data: &Mp) -> Severity {
    match map_get(data, "severity").and_then(Mp::as_str) {
        Some("warning") => Severity::Warning,
        Some("error") => Severity::Error,
        _ => Severity::Info,
    }
}

/// Posts one `update` frame's message on behalf of the node `ctx` runs.
pub fn post_update(ctx: &ProcessingContext, data: &Mp) {
    match map_get(data, "type").and_then(Mp::as_str) {
        Some("log_update") => ctx.log(severity(data), text(data, "content")),
        Some("notification") => ctx.notify(severity(data), text(data, "content")),
        Some("preview_update") => {
            ctx.post_preview(map_get(data, "value").map(to_json).unwrap_or_default())
        }
        Some("node_progress") => {
            let num = |k| {
                map_get(data, k)
                    .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f.round() as i64)))
                    .unwrap_or(0)
            };
            ctx.post_progress(num("progress"), num("total"));
        }
        other => tracing::debug!(
            node_id = ctx.node_id(),
            kind = ?other,
            "python update with no engine event; dropped"
        ),
    }
}
