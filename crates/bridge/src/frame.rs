//! The stdio transport of the bridge protocol: every frame is a 4-byte big-endian payload
//! length and one MessagePack map `{type, request_id, data}` (nodetool-core's
//! `nodetool/worker/stdio_server.py`). Binary travels as msgpack `bin`, never base64.
//!
//! [`decode_frame`] is a pure function of the payload bytes — the fuzz target. It never panics,
//! never allocates more than the payload holds (rmpv does not pre-allocate declared lengths) and
//! bounds nesting, so a hostile worker can only get an error back.

use bytes::Bytes;
use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use nodetool_core::{Error, ErrorKind, Result};

/// The worker's default frame cap (`MAX_BRIDGE_FRAME_SIZE`, `NODETOOL_BRIDGE_MAX_FRAME_SIZE`).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Deepest nesting accepted in a frame: node outputs are JSON-like values, never this deep, and
/// the limit keeps recursion (decode, conversion, drop) far from the stack's end.
pub const MAX_DEPTH: usize = 128;

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `type`: `discover`, `execute`, `result`, `chunk`, ...
    pub kind: String,
    /// Which request a reply answers. `None` when absent or not a string (the worker coerces
    /// the same way).
    pub request_id: Option<String>,
    /// `data`; `Nil` when absent.
    pub data: Value,
}

impl Message {
    pub fn new(kind: impl Into<String>, request_id: Option<String>, data: Value) -> Self {
        Self {
            kind: kind.into(),
            request_id,
            data,
        }
    }

    /// `data[key]` when `data` is a map.
    pub fn field(&self, key: &str) -> Option<&Value> {
        map_get(&self.data, key)
    }
}

/// `value[key]` for a msgpack map with string keys (maps are small; a linear scan is fastest).
pub fn map_get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn protocol_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unexpected, message).with_operation("bridge.frame")
}

/// Checks a frame's length prefix against the cap.
pub fn frame_length(header: [u8; 4], max_frame_bytes: usize) -> Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max_frame_bytes {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "frame of {len} bytes exceeds the bridge frame cap of {max_frame_bytes} bytes \
                 (NODETOOL_BRIDGE_MAX_FRAME_SIZE)"
            ),
        )
        .with_operation("bridge.frame"));
    }
    Ok(len)
}

/// Decodes one frame payload (the bytes after the length prefix) into a [`Message`].
///
/// Errors, never panics: a payload that is not exactly one msgpack value, is nested deeper than
/// [`MAX_DEPTH`], is not a map, or has no string `type`.
pub fn decode_frame(payload: &[u8]) -> Result<Message> {
    let mut rest = payload;
    let value = rmpv::decode::read_value_ref_with_max_depth(&mut rest, MAX_DEPTH)
        .map_err(|e| protocol_error(format!("malformed msgpack frame: {e}")))?;
    if !rest.is_empty() {
        return Err(protocol_error(format!(
            "malformed msgpack frame: {} bytes after the message",
            rest.len()
        )));
    }
    let rmpv::ValueRef::Map(entries) = value else {
        return Err(protocol_error(format!(
            "a frame must be a msgpack map, got {}",
            kind_of_ref(&value)
        )));
    };
    let mut kind = None;
    let mut request_id = None;
    let mut data = Value::Nil;
    for (k, v) in entries {
        let rmpv::ValueRef::String(k) = k else {
            continue;
        };
        match k.as_str() {
            Some("type") => match v {
                rmpv::ValueRef::String(s) => kind = s.as_str().map(str::to_owned),
                other => {
                    return Err(protocol_error(format!(
                        "a frame's `type` must be a string, got {}",
                        kind_of_ref(&other)
                    )))
                }
            },
            Some("request_id") => {
                if let rmpv::ValueRef::String(s) = v {
                    request_id = s.as_str().map(str::to_owned);
                }
            }
            Some("data") => data = v.to_owned(),
            _ => {}
        }
    }
    let kind = kind.ok_or_else(|| protocol_error("a frame has no `type`"))?;
    Ok(Message {
        kind,
        request_id,
        data,
    })
}

fn kind_of_ref(v: &rmpv::ValueRef<'_>) -> &'static str {
    use rmpv::ValueRef as V;
    match v {
        V::Nil => "nil",
        V::Boolean(_) => "a boolean",
        V::Integer(_) => "an integer",
        V::F32(_) | V::F64(_) => "a float",
        V::String(_) => "a string",
        V::Binary(_) => "binary",
        V::Array(_) => "an array",
        V::Map(_) => "a map",
        V::Ext(..) => "an extension value",
    }
}

/// Reads one frame payload. `Ok(None)` at a clean end of stream (before a length prefix);
/// a stream that ends inside a frame, or a length over the cap, is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = reader
            .read(&mut header[filled..])
            .await
            .map_err(|e| io_error("reading a frame header", e))?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(protocol_error(format!(
                "stream ended inside a frame header ({filled} of 4 bytes)"
            )));
        }
        filled += n;
    }
    let len = frame_length(header, max_frame_bytes)?;
    // Exact capacity and no zeroing: the payload is read straight into place.
    let mut payload = Vec::with_capacity(len);
    let got = reader
        .take(len as u64)
        .read_to_end(&mut payload)
        .await
        .map_err(|e| io_error("reading a frame", e))?;
    if got < len {
        return Err(protocol_error(format!(
            "stream ended inside a frame ({got} of {len} bytes)"
        )));
    }
    Ok(Some(payload))
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Unavailable, format!("{what}: {e}"))
        .with_operation("bridge.frame")
        .with_source(e)
        .set_temporary(false)
}

/// An encoded outgoing frame: msgpack bytes with large binary values kept as separate
/// [`Bytes`] parts, so a 64 MiB image is written from its own buffer, never copied into the frame.
#[derive(Debug, Clone, Default)]
pub struct OutFrame {
    parts: Vec<Bytes>,
    buf: Vec<u8>,
    len: usize,
}

/// Binary values at least this large travel as their own part instead of being copied.
const SPLIT_BIN_AT: usize = 64 * 1024;

impl OutFrame {
    /// A frame `{type, request_id, data}` whose `data` is written by `write_data`.
    pub fn build(
        kind: &str,
        request_id: Option<&str>,
        write_data: impl FnOnce(&mut OutFrame),
    ) -> OutFrame {
        let mut frame = OutFrame::default();
        frame.map_len(3);
        frame.str("type");
        frame.str(kind);
        frame.str("request_id");
        match request_id {
            Some(id) => frame.str(id),
            None => frame.nil(),
        }
        frame.str("data");
        write_data(&mut frame);
        frame.flush();
        frame
    }

    /// A frame whose `data` is a plain value.
    pub fn message(kind: &str, request_id: Option<&str>, data: &Value) -> OutFrame {
        Self::build(kind, request_id, |f| f.value(data))
    }

    pub fn map_len(&mut self, n: u32) {
        // Writes to a Vec cannot fail.
        let _ = rmp::encode::write_map_len(&mut self.buf, n);
    }

    pub fn array_len(&mut self, n: u32) {
        let _ = rmp::encode::write_array_len(&mut self.buf, n);
    }

    pub fn str(&mut self, s: &str) {
        let _ = rmp::encode::write_str(&mut self.buf, s);
    }

    pub fn nil(&mut self) {
        let _ = rmp::encode::write_nil(&mut self.buf);
    }

    pub fn value(&mut self, v: &Value) {
        let _ = rmpv::encode::write_value(&mut self.buf, v);
    }

    /// A `bin` value; large ones are referenced, not copied.
    pub fn bin(&mut self, bytes: &Bytes) {
        let _ = rmp::encode::write_bin_len(&mut self.buf, bytes.len() as u32);
        if bytes.len() < SPLIT_BIN_AT {
            self.buf.extend_from_slice(bytes);
        } else {
            self.flush();
            self.len += bytes.len();
            self.parts.push(bytes.clone());
        }
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.len += buf.len();
            self.parts.push(Bytes::from(buf));
        }
    }

    /// Payload length in bytes (without the 4-byte prefix).
    pub fn len(&self) -> usize {
        self.len + self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as one buffer (tests, small frames).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(&self.buf);
        out
    }

    /// Checks the payload against the cap before anything is written.
    pub fn check_size(&self, max_frame_bytes: usize) -> Result<()> {
        let len = self.len();
        if len > max_frame_bytes || len > u32::MAX as usize {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "request frame of {len} bytes exceeds the bridge frame cap of \
                     {max_frame_bytes} bytes (NODETOOL_BRIDGE_MAX_FRAME_SIZE; the worker refuses \
                     larger frames too)"
                ),
            )
            .with_operation("bridge.send"));
        }
        Ok(())
    }

    /// Writes the length prefix and the payload.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, writer: &mut W) -> Result<()> {
        let len = u32::try_from(self.len()).map_err(|_| {
            Error::new(ErrorKind::TooLarge, "frame over 4 GiB").with_operation("bridge.send")
        })?;
        let write = |e| io_error("writing a frame to the worker", e);
        writer.write_all(&len.to_be_bytes()).await.map_err(write)?;
        for p in &self.parts {
            writer.write_all(p).await.map_err(write)?;
        }
        if !self.buf.is_empty() {
            writer.write_all(&self.buf).await.map_err(write)?;
        }
        writer.flush().await.map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode");
        out
    }

    #[test]
    fn round_trips_and_splits_large_binaries() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let frame = OutFrame::build("execute", Some("r1"), |f| {
            f.map_len(2);
            f.str("small");
            f.bin(&Bytes::from_static(b"abc"));
            f.str("big");
            f.bin(&big);
        });
        assert_eq!(
            frame.parts.len(),
            2,
            "the header, then the big blob by reference"
        );
        let msg = decode_frame(&frame.to_vec()).expect("decode");
        assert_eq!(msg.kind, "execute");
        assert_eq!(msg.request_id.as_deref(), Some("r1"));
        assert_eq!(msg.field("small"), Some(&Value::Binary(b"abc".to_vec())));
        assert_eq!(msg.field("big"), Some(&Value::Binary(big.to_vec())));
    }

    #[test]
    fn bad_payloads_are_errors() {
        // Not a map, trailing bytes, missing type, non-string type, truncated, too deep.
        let cases: Vec<Vec<u8>> = vec![
            payload(&Value::from(1)),
            [
                payload(&Value::Map(vec![(Value::from("type"), Value::from("x"))])),
                vec![0xc0],
            ]
            .concat(),
            payload(&Value::Map(vec![(Value::from("data"), Value::Nil)])),
            payload(&Value::Map(vec![(Value::from("type"), Value::from(3))])),
            vec![0x83, 0xa4, b't'],
            vec![0x91; 10_000],
            // A str32 claiming 4 GiB in a 5-byte payload: an error, not a 4 GiB allocation.
            vec![0xdb, 0xff, 0xff, 0xff, 0xff],
            Vec::new(),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(decode_frame(case).is_err(), "case {i} decoded");
        }
        let id = payload(&Value::Map(vec![
            (Value::from("type"), Value::from("result")),
            (Value::from("request_id"), Value::from(5)),
        ]));
        assert_eq!(decode_frame(&id).expect("decode").request_id, None);
    }

    #[test]
    fn length_prefix_is_capped() {
        assert_eq!(frame_length(10u32.to_be_bytes(), 10).expect("fits"), 10);
        let err = frame_length(11u32.to_be_bytes(), 10).expect_err("over");
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(err.to_string().contains("NODETOOL_BRIDGE_MAX_FRAME_SIZE"));
    }

    #[tokio::test]
    async fn reads_frames_and_refuses_truncation() {
        let frame = OutFrame::message("discover", Some("d"), &Value::Map(vec![]));
        let mut wire = Vec::new();
        frame.write_to(&mut wire).await.expect("write");
        let mut r = &wire[..];
        let got = read_frame(&mut r, 1024)
            .await
            .expect("read")
            .expect("frame");
        assert_eq!(decode_frame(&got).expect("decode").kind, "discover");
        assert!(read_frame(&mut r, 1024).await.expect("eof").is_none());
        let mut cut = &wire[..wire.len() - 1];
        assert!(read_frame(&mut cut, 1024).await.is_err());
        let mut head = &wire[..2];
        assert!(read_frame(&mut head, 1024).await.is_err());
    }
}
