//! The subprocess/Docker worker protocol (`nodetool_workers::protocol`): a byte stream of
//! length-prefixed JSON frames, read as the worker reads its stdin (`ParentFrame`) and as the
//! parent reads the worker's stdout (`ChildFrame`). Every frame that decodes must encode and
//! decode again (the two sides use the same types), attachments (raw bytes after a call's or a
//! reply's JSON) included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetool_workers::protocol::{
    encode_frame, read_frame, Attachment, ChildFrame, ParentFrame, MAX_FRAME_BYTES,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn read_all<T: DeserializeOwned + Serialize + Attachment>(data: &[u8]) {
    let mut stream = data;
    // Frames are at least 4 bytes, so this ends.
    for _ in 0..=data.len() / 4 {
        match futures::executor::block_on(read_frame::<_, T>(&mut stream, MAX_FRAME_BYTES)) {
            Ok(Some(frame)) => {
                let bytes = encode_frame(&frame).expect("a decoded frame encodes");
                let mut again = bytes.as_slice();
                let back =
                    futures::executor::block_on(read_frame::<_, T>(&mut again, MAX_FRAME_BYTES));
                match back {
                    Ok(Some(_)) => {}
                    other => panic!(
                        "an encoded frame does not decode: {:?}\n{}",
                        other.err(),
                        String::from_utf8_lossy(&bytes[4..])
                    ),
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read_all::<ParentFrame>(data);
    read_all::<ChildFrame>(data);
});
