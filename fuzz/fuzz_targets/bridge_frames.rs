//! The Python bridge's stdio frames (`nodetool_bridge::frame`): a stream of 4-byte big-endian
//! lengths and msgpack maps from the worker process, decoded by `decode_frame`, converted to JSON
//! (`convert::to_json`), and the way back (`OutFrame`) for what we send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetool_bridge::convert::{to_json, to_msgpack};
use nodetool_bridge::frame::{decode_frame, read_frame, OutFrame};

/// The bridge's reader runs on tokio workers: 2 MiB stacks.
const STACK: usize = 2 * 1024 * 1024;

fn check_payload(payload: &[u8]) {
    let Ok(msg) = decode_frame(payload) else {
        return;
    };
    let json = to_json(&msg.data);
    // What we send decodes to the same message head.
    // What the bridge sends is built from JSON (worker values pass through `to_json` first).
    let out = OutFrame::message(&msg.kind, msg.request_id.as_deref(), &to_msgpack(&json));
    let mut bytes = Vec::new();
    futures::executor::block_on(out.write_to(&mut bytes)).expect("writing to a Vec");
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(len, bytes.len() - 4, "length prefix");
    assert_eq!(len, out.len());
    assert_eq!(out.to_vec(), bytes[4..]);
    let back = decode_frame(&bytes[4..]).expect("an OutFrame decodes");
    assert_eq!(back.kind, msg.kind);
    assert_eq!(back.request_id, msg.request_id);
    assert_eq!(to_json(&back.data), json);
    let again = to_msgpack(&json);
    assert_eq!(to_json(&again), json, "json -> msgpack -> json");
}

fn run(data: &[u8]) {
    // The payload alone (as the fuzz target of decode_frame) ...
    check_payload(data);
    // ... and the data as a stream of frames, read as the bridge reads the worker's stdout.
    let mut stream = data;
    for _ in 0..=data.len() / 4 {
        match futures::executor::block_on(read_frame(&mut stream, 1 << 20)) {
            Ok(Some(payload)) => check_payload(&payload),
            Ok(None) | Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || run(&data))
        .expect("spawn")
        .join()
        .expect("no panic");
});
