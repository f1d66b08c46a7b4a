//! `lib.markdown.*`: ExtractLinks.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{json, Value};

use nodetool_engine::node::NodeSpec;
use nodetool_engine::registry::Registry;

use super::fn_node;

/// nodetool-base's pattern: `[text](url)` or a bare `<url>`.
static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[([^\]]+)\]\(([^)]+)\)|<([^>]+)>").unwrap_or_else(|e| panic!("link regex: {e}"))
});

pub fn register(r: &mut Registry) {
    fn_node(
        r,
        NodeSpec::new("lib.markdown.ExtractLinks", "Extract Links")
            .input("markdown", "str", json!(""))
            .input("include_titles", "bool", json!(true))
            .output("output", "list[dict[str, str]]")
            .cacheable(),
        |i| {
            let markdown = i.str("markdown")?;
            let titles = i.get("include_titles").is_none() || i.bool("include_titles")?;
            Ok(Value::Array(extract_links(&markdown, titles)))
        },
    );
}

/// Every link in order, `{url, title}`; bare `<url>` links have an empty title, as do all links
/// when `include_titles` is off.
fn extract_links(markdown: &str, include_titles: bool) -> Vec<Value> {
    LINK.captures_iter(markdown)
        .filter_map(|c| match (c.get(1), c.get(2), c.get(3)) {
            (Some(text), Some(url), _) => Some(json!({
                "url": url.as_str(),
                "title": if include_titles { text.as_str() } else { "" },
            })),
            (_, _, Some(url)) => Some(json!({"url": url.as_str(), "title": ""})),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_in_order() {
        let md = "See [Paper](https://a.org/1.pdf) and <https://b.org>, not [x] (y).";
        assert_eq!(
            extract_links(md, true),
            vec![
                json!({"url": "https://a.org/1.pdf", "title": "Paper"}),
                json!({"url": "https://b.org", "title": ""}),
            ]
        );
        assert_eq!(extract_links(md, false)[0]["title"], "");
    }
}
