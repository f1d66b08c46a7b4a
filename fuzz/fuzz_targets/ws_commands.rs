//! `/ws` frames: the server's JSON (text) and MessagePack (binary) decoders, the typed command
//! decoder (`wire::parse_frame`), `run_job`'s `RunJobRequest` and its validation against the
//! default registry, and the replies' encoding back in the client's format. Runs on a 2 MiB stack, as a tokio worker does.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nodetool_engine::Registry;
use nodetool_exec::RunJobRequest;
use nodetool_server::ws::{decode_binary_frame, decode_text_frame};
use serde_json::Value;

const STACK: usize = 2 * 1024 * 1024;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(nodetool_nodes::registry)
}

fn handle(frame: Value) {
    // The reply (or event) goes back in the client's format: both encoders must take any value.
    let packed = rmp_serde::to_vec_named(&frame).expect("msgpack encodes a decoded frame");
    let back = decode_binary_frame(&packed).expect("our msgpack decodes");
    assert_eq!(back, frame, "msgpack round trip");
    let text = frame.to_string();
    let _ = decode_text_frame(&text);
    // The typed decoder the socket uses; a refusal is a frame both encoders must write.
    if let Err(refusal) = nodetool_server::wire::parse_frame(frame.clone()) {
        let refusal = nodetool_server::wire::Frame::from(refusal);
        refusal.to_json().expect("an error frame encodes as JSON");
        refusal.to_msgpack().expect("an error frame encodes as MessagePack");
    }
    let Some(command) = frame.get("command").and_then(Value::as_str) else {
        return;
    };
    let data = frame.get("data").cloned().unwrap_or(Value::Null);
    if command == "run_job" {
        if let Ok(request) = serde_json::from_value::<RunJobRequest>(data) {
            if let Ok(valid) = request.validate() {
                let _ = nodetool_engine::validate(&valid.graph, registry(), &valid.params)
                    .map_err(|e| e.to_string());
            }
        }
    }
}

fn run(data: &[u8]) {
    // The first byte says which kind of frame it is, as the WebSocket opcode does.
    let Some((kind, payload)) = data.split_first() else {
        return;
    };
    let decoded = if kind & 1 == 0 {
        match std::str::from_utf8(payload) {
            Ok(text) => decode_text_frame(text),
            Err(_) => return,
        }
    } else {
        decode_binary_frame(payload)
    };
    if let Ok(frame) = decoded {
        handle(frame);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = registry();
    let data = data.to_vec();
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || run(&data))
        .expect("spawn")
        .join()
        .expect("no panic");
});
