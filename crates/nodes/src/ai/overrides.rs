//! `--model-override TYPE=PROVIDER:MODEL` (and `NODETOOL_MODEL_OVERRIDE`): rewrites every model
//! ref of one type in a graph before it runs, so a saved workflow runs against another model
//! (e.g. the bundled examples against a local llama.cpp server) without editing the file.

use serde_json::{json, Value};

use nodetool_core::{Error, Result};
use nodetool_engine::Graph;

/// One rewrite: refs of `model_type` get `provider` and `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOverride {
    /// `language_model`, `image_model`, `tts_model`, `asr_model`, …
    pub model_type: String,
    pub provider: String,
    pub id: String,
}

/// Parses `TYPE=PROVIDER:MODEL` items; a bare `PROVIDER:MODEL` means `language_model`.
pub fn parse_model_overrides<S: AsRef<str>>(items: &[S]) -> Result<Vec<ModelOverride>> {
    items
        .iter()
        .map(|item| {
            let item = item.as_ref().trim();
            let (ty, target) = item.split_once('=').unwrap_or(("language_model", item));
            let (provider, id) = target.split_once(':').ok_or_else(|| {
                Error::invalid_input(format!(
                    "model override `{item}` must be TYPE=PROVIDER:MODEL, e.g. language_model=llama_cpp:tiny"
                ))
            })?;
            let (ty, provider, id) = (ty.trim(), provider.trim(), id.trim());
            if ty.is_empty() || provider.is_empty() || id.is_empty() {
                return Err(Error::invalid_input(format!(
                    "model override `{item}` has an empty part; use TYPE=PROVIDER:MODEL"
                )));
            }
            Ok(ModelOverride {
                model_type: ty.to_owned(),
                provider: provider.to_owned(),
                id: id.to_owned(),
            })
        })
        .collect()
}

/// Rewrites the model refs of `graph`; returns how many refs changed.
pub fn apply_model_overrides(graph: &mut Graph, overrides: &[ModelOverride]) -> usize {
    let mut changed = 0;
    for node in &mut graph.nodes {
        for map in [&mut node.data, &mut node.dynamic_properties] {
            for value in map.values_mut() {
                let Some(obj) = value.as_object_mut() else {
                    continue;
                };
                let ty = obj
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if let Some(o) = overrides.iter().find(|o| o.model_type == ty) {
                    obj.insert("provider".into(), json!(o.provider));
                    obj.insert("id".into(), json!(o.id));
                    obj.insert("name".into(), json!(o.id));
                    changed += 1;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_rewrite_refs_of_their_type_only() {
        let o = parse_model_overrides(&["language_model=llama_cpp:tiny", "openai:gpt-image-1"])
            .unwrap();
        assert_eq!(o[0].provider, "llama_cpp");
        assert_eq!(o[1].model_type, "language_model");
        assert!(parse_model_overrides(&["nonsense"]).is_err());
        assert!(parse_model_overrides(&["x=:m"]).is_err());

        let mut graph: Graph = serde_json::from_value(json!({"nodes": [
            {"id": "a", "type": "nodetool.agents.Agent",
             "data": {"model": {"type": "language_model"}, "prompt": "hi"}},
            {"id": "b", "type": "nodetool.image.TextToImage",
             "data": {"model": {"type": "image_model", "provider": "openai", "id": "x"}}},
        ], "edges": []}))
        .unwrap();
        let only_language = parse_model_overrides(&["language_model=llama_cpp:tiny"]).unwrap();
        assert_eq!(apply_model_overrides(&mut graph, &only_language), 1);
        assert_eq!(graph.nodes[0].data["model"]["provider"], "llama_cpp");
        assert_eq!(graph.nodes[0].data["model"]["id"], "tiny");
        assert_eq!(graph.nodes[1].data["model"]["provider"], "openai");
    }
}
