//! `nodetool.image.{TextToImage, ImageToImage}`, `nodetool.text.AutomaticSpeechRecognition`,
//! `nodetool.audio.TextToSpeech`: one provider call each; results go to temp storage and out as
//! NodeTool refs.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use nodetool_core::{Error, Result};
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec, Preflight};
use nodetool_engine::registry::Registry;
use nodetool_engine::ProcessingContext;
use nodetool_providers::{
    AsrRequest, ImageToImageParams, ModelKind, TextToImageParams, TtsRequest, Usage,
};

use super::{account, check_model, media_of, model_of, providers, store_temp, JobSecrets};

fn empty(kind: &str) -> Value {
    json!({"type": kind, "provider": "empty", "id": "", "name": ""})
}

fn empty_ref(kind: &str) -> Value {
    json!({"type": kind, "uri": "", "asset_id": null, "data": null})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    TextToImage,
    ImageToImage,
    Asr,
    Tts,
}

#[derive(Debug)]
struct MediaNode {
    spec: NodeSpec,
    op: Op,
}

pub fn register(r: &mut Registry) {
    let image_common = |spec: NodeSpec| {
        spec.input("prompt", "str", json!(""))
            .input("negative_prompt", "str", json!(""))
            .input("guidance_scale", "float", json!(7.5))
            .input("num_inference_steps", "int", json!(30))
            .input("seed", "int", json!(-1))
            .input("safety_check", "bool", json!(true))
            .output("output", "image")
    };
    r.register(Arc::new(MediaNode {
        spec: image_common(
            NodeSpec::new("nodetool.image.TextToImage", "Text To Image")
                .input("model", "image_model", empty("image_model"))
                .input("width", "int", json!(512))
                .input("height", "int", json!(512)),
        ),
        op: Op::TextToImage,
    }));
    r.register(Arc::new(MediaNode {
        spec: image_common(
            NodeSpec::new("nodetool.image.ImageToImage", "Image To Image")
                .input("model", "image_model", empty("image_model"))
                .input("image", "image", empty_ref("image"))
                .input("strength", "float", json!(0.8))
                .input("target_width", "int", json!(512))
                .input("target_height", "int", json!(512))
                .input("scheduler", "str", json!("")),
        ),
        op: Op::ImageToImage,
    }));
    r.register(Arc::new(MediaNode {
        spec: NodeSpec::new(
            "nodetool.text.AutomaticSpeechRecognition",
            "Automatic Speech Recognition",
        )
        .input("model", "asr_model", empty("asr_model"))
        .input("audio", "audio", empty_ref("audio"))
        .output("text", "str"),
        op: Op::Asr,
    }));
    r.register(Arc::new(MediaNode {
        spec: NodeSpec::new("nodetool.audio.TextToSpeech", "Text To Speech")
            .input("model", "tts_model", empty("tts_model"))
            .input(
                "text",
                "str",
                json!("Hello! This is a text-to-speech demonstration."),
            )
            .input("speed", "float", json!(1.0))
            .output("audio", "audio")
            .output("chunk", "chunk"),
        op: Op::Tts,
    }));
}

fn int(inputs: &NodeInputs, name: &str, default: i64) -> Result<i64> {
    Ok(inputs.opt_i64(name)?.unwrap_or(default))
}

fn dimension(inputs: &NodeInputs, name: &str) -> Result<u32> {
    let v = int(inputs, name, 512)?;
    if !(64..=4096).contains(&v) {
        return Err(
            Error::invalid_input(format!("`{name}` must be within 64..=4096, got {v}"))
                .with_context("input", name.to_owned()),
        );
    }
    Ok(v as u32)
}

fn text_params(inputs: &NodeInputs, model: &str, w: &str, h: &str) -> Result<TextToImageParams> {
    Ok(TextToImageParams {
        model: model.to_owned(),
        prompt: inputs.text("prompt"),
        negative_prompt: inputs.text("negative_prompt"),
        width: dimension(inputs, w)?,
        height: dimension(inputs, h)?,
        seed: inputs.opt_i64("seed")?.filter(|s| *s >= 0),
        guidance_scale: inputs.get("guidance_scale").and_then(Value::as_f64),
        num_inference_steps: inputs
            .opt_i64("num_inference_steps")?
            .map(|n| n.clamp(1, 1000) as u32),
    })
}

fn params_of(inputs: &NodeInputs, names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|n| inputs.get(n).map(|v| ((*n).to_owned(), v.clone())))
        .collect()
}

#[async_trait]
impl NodeImpl for MediaNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn preflight(&self, node: &Preflight<'_>) -> Vec<String> {
        let kind = match self.op {
            Op::TextToImage | Op::ImageToImage => ModelKind::Image,
            Op::Asr => ModelKind::Asr,
            Op::Tts => ModelKind::Tts,
        };
        check_model(node, "model", kind)
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let model = model_of(inputs, "model")?;
        let set = providers(ctx)?;
        let secrets = JobSecrets(ctx.secrets());
        let started = Instant::now();
        let result: Result<(Usage, Value, &'static str)> = async {
            match self.op {
                Op::TextToImage => {
                    let p = text_params(inputs, &model.id, "width", "height")?;
                    if p.prompt.trim().is_empty() {
                        return Err(Error::invalid_input("The input prompt cannot be empty.")
                            .with_context("input", "prompt"));
                    }
                    let img = set
                        .image(&model.provider, &secrets)?
                        .text_to_image(p)
                        .await?;
                    let r = store_temp(ctx, "image", img.bytes, &img.mime_type).await?;
                    Ok((img.usage, r, "output"))
                }
                Op::ImageToImage => {
                    let image = media_of(ctx, inputs, "image", "image/png")
                        .await?
                        .ok_or_else(|| {
                            Error::invalid_input("input `image` is not connected: no image given")
                                .with_context("input", "image")
                        })?;
                    let text = text_params(inputs, &model.id, "target_width", "target_height")?;
                    let strength = inputs.get("strength").and_then(Value::as_f64);
                    let img = set
                        .image(&model.provider, &secrets)?
                        .image_to_image(ImageToImageParams {
                            image,
                            text,
                            strength,
                        })
                        .await?;
                    let r = store_temp(ctx, "image", img.bytes, &img.mime_type).await?;
                    Ok((img.usage, r, "output"))
                }
                Op::Asr => {
                    let audio = inputs.value("audio");
                    if crate::image::is_empty_ref(&audio) {
                        return Err(Error::invalid_input(
                            "input `audio` is not connected: no audio given",
                        )
                        .with_context("input", "audio"));
                    }
                    let media = media_of(ctx, inputs, "audio", "audio/wav")
                        .await?
                        .ok_or_else(|| Error::invalid_input("no audio"))?;
                    let nodetool_providers::Media::Inline { mime_type, data } = media else {
                        return Err(Error::invalid_input("audio must be bytes"));
                    };
                    let r = set
                        .asr(&model.provider, &secrets)?
                        .transcribe(AsrRequest {
                            model: model.id.clone(),
                            audio: data.into(),
                            mime_type,
                            language: None,
                            prompt: None,
                            temperature: None,
                        })
                        .await?;
                    Ok((r.usage, json!(r.text), "text"))
                }
                Op::Tts => {
                    let text = inputs.text("text");
                    let speed = inputs
                        .get("speed")
                        .and_then(Value::as_f64)
                        .unwrap_or(1.0)
                        .clamp(0.25, 4.0);
                    let voice = model_voice(&inputs.value("model"));
                    let speech = set
                        .tts(&model.provider, &secrets)?
                        .speak(TtsRequest {
                            model: model.id.clone(),
                            text,
                            voice,
                            speed,
                        })
                        .await?;
                    let r = store_temp(ctx, "audio", speech.audio, &speech.mime_type).await?;
                    Ok((Usage::default(), r, "audio"))
                }
            }
        }
        .await;
        let params = params_of(inputs, &["width", "height", "seed", "speed", "strength"]);
        match result {
            Ok((usage, value, slot)) => {
                account(ctx, &model, &usage, started, None, params);
                out.emit(slot, value).await
            }
            Err(e) => {
                account(ctx, &model, &Usage::default(), started, Some(&e), params);
                Err(e)
            }
        }
    }
}

/// A TTS model ref's voice (`voices[0]`, or `selected_voice`), else OpenAI's default.
fn model_voice(model: &Value) -> String {
    model
        .get("selected_voice")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .or_else(|| model.pointer("/voices/0").and_then(Value::as_str))
        .unwrap_or("alloy")
        .to_owned()
}
