//! Caps on the values a job builds, so that a small input (`Range(0, 2**62)`, `'x' * N`, a
//! list extended with itself thirty times) fails with a clear `TooLarge` instead of exhausting
//! the process's memory. One helper per measure, used by every node that sizes a value from a
//! user's number (ranges, repeats, collects, templates) before building it, and by
//! [`Emitter::emit`](crate::node::Emitter::emit) on every value a node outputs.

use serde_json::Value;

use nodetool_core::{Error, ErrorKind, Result};

/// Most items (list elements and dict entries, counted at every depth) one value may hold.
/// A million JSON values is roughly 50–100 MiB in memory.
pub const MAX_ITEMS: usize = 1_000_000;

/// Most bytes of text one value may hold (all its strings together).
pub const MAX_TEXT_BYTES: usize = 64 * 1024 * 1024;

/// Most minijinja instructions one template render may execute: about a second of CPU in a
/// release build (real prompt templates use thousands). Deadlines and cancellation stop a
/// render sooner (see `nodetool_nodes::text::render_until`).
pub const TEMPLATE_FUEL: u64 = 100_000_000;

/// Most memory one template render may hold at once, where the binary installs
/// `nodetool_alloc::Budgeted`: fuel bounds a render's steps, not its bytes (`s ~ s` in a loop,
/// a macro's captured output fed back into itself). Four times [`MAX_TEXT_BYTES`]: the largest
/// allowed text as input, as output and the copies in between.
pub const TEMPLATE_MEMORY_BYTES: usize = 4 * MAX_TEXT_BYTES;

/// Renders stopped past [`TEMPLATE_MEMORY_BYTES`] after which no more renders start: each one
/// keeps what it held (see `nodetool_alloc`), so at most this many times that memory stays
/// held until the process restarts.
pub const MAX_RUNAWAY_TEMPLATES: usize = 4;

fn too_large(what: impl std::fmt::Display, detail: String) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("{what} is too large: {detail}"),
    )
    .set_temporary(false)
}

/// Refuses building `count` items (a range, a repeat, a collect) past [`MAX_ITEMS`]. Takes
/// `u128` so callers can compute counts with no overflow, then ask.
pub fn check_items(what: impl std::fmt::Display, count: u128) -> Result<()> {
    if count > MAX_ITEMS as u128 {
        return Err(too_large(
            what,
            format!("{count} items, over the limit of {MAX_ITEMS}"),
        ));
    }
    Ok(())
}

/// Refuses text of `bytes` bytes past [`MAX_TEXT_BYTES`].
pub fn check_text(what: impl std::fmt::Display, bytes: u128) -> Result<()> {
    if bytes > MAX_TEXT_BYTES as u128 {
        return Err(too_large(
            what,
            format!("{bytes} bytes of text, over the limit of {MAX_TEXT_BYTES}"),
        ));
    }
    Ok(())
}

/// Refuses a value holding more than [`MAX_ITEMS`] items or [`MAX_TEXT_BYTES`] bytes of text
/// (keys included). Stops walking as soon as a cap is passed, so the cost is bounded by the cap.
pub fn check_value(what: impl std::fmt::Display, value: &Value) -> Result<()> {
    let mut items = 0usize;
    let mut bytes = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => bytes += s.len(),
            Value::Array(a) => {
                items += a.len();
                stack.extend(a.iter());
            }
            Value::Object(m) => {
                items += m.len();
                for (k, v) in m {
                    bytes += k.len();
                    stack.push(v);
                }
            }
            _ => {}
        }
        if items > MAX_ITEMS {
            return Err(too_large(
                &what,
                format!("more than {MAX_ITEMS} items (list and dict entries)"),
            ));
        }
        if bytes > MAX_TEXT_BYTES {
            return Err(too_large(
                &what,
                format!("more than {MAX_TEXT_BYTES} bytes of text"),
            ));
        }
    }
    Ok(())
}

/// A running total of what a node accumulates (Collect, a stream's chunk): refuses the item
/// that would take the total past [`MAX_ITEMS`] or [`MAX_TEXT_BYTES`], before it is kept.
#[derive(Debug, Default)]
pub struct Budget {
    items: usize,
    bytes: usize,
}

impl Budget {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `value` as one more item (plus what it holds).
    pub fn add(&mut self, what: impl std::fmt::Display, value: &Value) -> Result<()> {
        let (items, bytes) = measure(value);
        self.add_counts(what, items + 1, bytes)
    }

    /// Counts `items` items and `bytes` bytes of text.
    pub fn add_counts(
        &mut self,
        what: impl std::fmt::Display,
        items: usize,
        bytes: usize,
    ) -> Result<()> {
        self.items = self.items.saturating_add(items);
        self.bytes = self.bytes.saturating_add(bytes);
        check_items(&what, self.items as u128)?;
        check_text(&what, self.bytes as u128)
    }

    /// Starts over (a chunk was emitted).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Items (list and dict entries at every depth) and text bytes (keys included) of a value.
pub fn measure(value: &Value) -> (usize, usize) {
    let (mut items, mut bytes) = (0usize, 0usize);
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => bytes += s.len(),
            Value::Array(a) => {
                items += a.len();
                stack.extend(a.iter());
            }
            Value::Object(m) => {
                items += m.len();
                for (k, v) in m {
                    bytes += k.len();
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    (items, bytes)
}

/// How much work a value is, counted up to `limit` (items plus text bytes / 64): decides
/// whether a function node runs inline or on the blocking pool.
pub fn weight_at_least(value: &Value, limit: usize) -> bool {
    let mut w = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        w += 1;
        match v {
            Value::String(s) => w += s.len() / 64,
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => {
                w += m.len();
                stack.extend(m.values());
            }
            _ => {}
        }
        if w >= limit {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caps_count_every_depth() {
        assert!(check_value("v", &json!([[1, 2], {"a": "b"}])).is_ok());
        let wide = Value::Array(vec![json!(1); MAX_ITEMS + 1]);
        let e = check_value("output", &wide).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert!(e.message().contains("output is too large"), "{e}");
        // The same count split across nesting levels is still too many.
        let half = Value::Array(vec![json!(1); MAX_ITEMS / 2 + 1]);
        assert!(check_value("v", &json!([half.clone(), half])).is_err());
        let text = Value::String("x".repeat(MAX_TEXT_BYTES / 2 + 1));
        assert!(check_value("v", &text).is_ok());
        assert!(check_value("v", &json!([text.clone(), text])).is_err());
        assert!(check_items("range", MAX_ITEMS as u128).is_ok());
        assert!(check_items("range", u128::MAX).is_err());
        assert!(check_text("t", MAX_TEXT_BYTES as u128 + 1).is_err());
    }

    #[test]
    fn budget_refuses_the_item_past_the_cap() {
        let mut b = Budget::new();
        let chunk = Value::Array(vec![json!(1); MAX_ITEMS / 4]);
        for _ in 0..3 {
            b.add("collect", &chunk).unwrap();
        }
        let e = b.add("collect", &chunk).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert!(e.message().starts_with("collect is too large"), "{e}");
        b.reset();
        b.add_counts("t", 0, MAX_TEXT_BYTES).unwrap();
        assert!(b.add_counts("t", 0, 1).is_err());
    }

    #[test]
    fn weight_stops_at_the_limit() {
        assert!(!weight_at_least(&json!([1, 2, 3]), 100));
        assert!(weight_at_least(&Value::Array(vec![json!(1); 1000]), 100));
        assert!(weight_at_least(&json!("x".repeat(64 * 200)), 100));
    }
}
