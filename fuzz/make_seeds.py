#!/usr/bin/env python3
"""Writes the binary seed files of fuzz/corpus/ (frames are awkward to hand-edit).

Run from fuzz/: python3 make_seeds.py. Text seeds (keys, URIs, graphs, templates) are plain
files in corpus/ and are edited directly.
"""
import json
import struct

NULL = None


def mp(v):
    """A minimal MessagePack encoder: nil, bool, int, float, str, bytes, list, dict."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2**32:
            return b"\xce" + struct.pack(">I", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        return (bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        head = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def prefixed(b):
    return struct.pack(">I", len(b)) + b


def jframe(obj):
    return prefixed(json.dumps(obj, separators=(",", ":")).encode())


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


GRAPH = {
    "nodes": [
        {"id": "name", "type": "nodetool.input.StringInput", "data": {"name": "name", "value": "world"}},
        {"id": "greet", "type": "nodetool.text.FormatText", "data": {"template": "Hello, {{ name }}!"},
         "dynamic_properties": {"name": ""}},
        {"id": "out", "type": "nodetool.output.Output", "data": {"name": "greeting"}},
    ],
    "edges": [
        {"id": "e1", "source": "name", "sourceHandle": "output", "target": "greet", "targetHandle": "name"},
        {"id": "e2", "source": "greet", "sourceHandle": "output", "target": "out", "targetHandle": "value"},
    ],
}

# --- worker_frames: the exec worker protocol (4-byte length + JSON) ---
SPEC = {
    "job_id": "019000aa-0000-7000-8000-000000000001", "user_id": "1", "workflow_id": "wf", "graph": GRAPH,
    "params": {"name": "fuzz"},
    "resource_limits": {"memory_bytes": 536870912, "cpu_seconds": NULL, "file_size_bytes": NULL,
                        "open_files": 256, "processes": NULL, "time_seconds": 30.0},
    "secrets": {"OPENAI_API_KEY": "sk-x"}, "use_cache": True, "streaming_inputs": True,
}
SERVICES = {
    "asset_storage": {"scheme": "file", "location": "/data/assets", "presign": False, "durable": True},
    "temp_storage": {"scheme": "memory", "location": "memory", "presign": False, "durable": False},
    "node_cache": "memory", "node_cache_ttl_secs": 3600.0, "asset_records": True,
    "max_chunk_bytes": 4194304, "max_calls_in_flight": 8,
}
W = "corpus/worker_frames"
write(f"{W}/parent_request", jframe({"frame": "request", "body": {"protocol_version": 3, "spec": SPEC, "services": SERVICES}}))
write(f"{W}/parent_request_v1", jframe({"frame": "request", "body": {"protocol_version": 1, "spec": {
    "job_id": "j", "user_id": "u", "graph": {"nodes": [], "edges": []}}}}))
write(f"{W}/parent_session",
      jframe({"frame": "input_push", "body": {"id": 1, "input": "name", "handle": "output",
                                              "value": {"type": "chunk", "content": "hi", "done": False}}})
      + jframe({"frame": "input_end", "body": {"id": 2, "input": "name", "handle": "output"}})
      + jframe({"frame": "reply", "body": {"call_id": 7, "result": {"uri": "asset://u/x.png"}}})
      + jframe({"frame": "reply", "body": {"call_id": 8, "error": {
          "kind": "not_found", "message": "no such object", "temporary": False, "operation": "file.download"}}}))
write(f"{W}/child_session",
      jframe({"frame": "event", "body": {"job_id": "j", "seq": 1, "type": "job_update", "status": "running",
                                         "workflow_id": "wf"}})
      + jframe({"frame": "event", "body": {"job_id": "j", "seq": 2, "type": "node_update", "node_id": "greet",
                                           "node_name": "FormatText", "node_type": "nodetool.text.FormatText",
                                           "status": "completed", "result": {"output": "Hello"}}})
      + jframe({"frame": "call", "body": {"call_id": 1, "op": "storage.upload",
                                          "args": {"key": "u/x.png", "content_type": "image/png"}}})
      + jframe({"frame": "input_ack", "body": {"id": 1, "error": NULL}})
      + jframe({"frame": "input_ack", "body": {"id": 2, "error": {"kind": "invalid_input", "message": "push after end"}}})
      + jframe({"frame": "outcome", "body": {"status": "completed", "result": {"greeting": ["Hello, fuzz!"]},
                                             "error": NULL, "failed_node": NULL, "duration_secs": 0.12}}))
# Pause control: the request's offer (starting paused), then the gate's changes; the worker's
# answer first, then the run's job_updates.
write(f"{W}/parent_pause",
      jframe({"frame": "request", "body": {"protocol_version": 1, "spec": {
          "job_id": "j", "user_id": "u", "graph": {"nodes": [], "edges": []}}, "pause": {"paused": True}}})
      + jframe({"frame": "set_paused", "body": {"paused": False}})
      + jframe({"frame": "set_paused", "body": {"paused": True}}))
write(f"{W}/child_pause",
      jframe({"frame": "controls", "body": {"pause": True}})
      + jframe({"frame": "event", "body": {"job_id": "j", "seq": 1, "type": "job_update", "status": "paused",
                                         "message": "Job paused"}})
      + jframe({"frame": "event", "body": {"job_id": "j", "seq": 2, "type": "job_update", "status": "running",
                                           "message": "Job resumed"}}))
write(f"{W}/too_large_header", b"\xff\xff\xff\xff{\"frame\"")
write(f"{W}/text_header", b"Error: not a worker\n")
write(f"{W}/truncated", jframe({"frame": "input_end", "body": {"id": 2, "input": "a", "handle": "b"}})[:-5])

# --- bridge_frames: the Python bridge (4-byte length + msgpack map) ---
B = "corpus/bridge_frames"
write(f"{B}/discover_payload", mp({"type": "discover", "request_id": "1", "data": {}}))
write(f"{B}/stream",
      prefixed(mp({"type": "discover_result", "request_id": "1", "data": {"nodes": [
          {"node_type": "nodetool.text.Upper", "title": "Upper", "properties": [{"name": "text", "type": {"type": "str"}}],
           "outputs": [{"name": "output", "type": {"type": "str"}}]}]}}))
      + prefixed(mp({"type": "chunk", "request_id": "2", "data": {"handle": "output", "content": b"\x89PNG\r\n",
                                                                  "done": False, "ratio": 0.5, "n": -3}}))
      + prefixed(mp({"type": "result", "request_id": "2", "data": {"outputs": {"output": "HELLO"}, "ms": 12}}))
      + prefixed(mp({"type": "error", "request_id": None, "data": {"message": "boom", "traceback": "..."}})))
write(f"{B}/ext_timestamp", mp({"type": "result", "request_id": "3", "data": {"t": NULL}})[:-1]
      + b"\xd6\xff\x65\x00\x00\x00")
write(f"{B}/not_a_map", mp(["type", "x"]))
write(f"{B}/type_not_string", mp({"type": 7, "data": NULL}))
write(f"{B}/trailing_bytes", mp({"type": "x"}) + b"\x00")

# --- ws_commands: first byte even = text (JSON), odd = binary (msgpack) ---
S = "corpus/ws_commands"
RUN = {"command": "run_job", "data": {"type": "run_job_request", "workflow_id": "wf", "graph": GRAPH,
                                      "params": {"name": "ws"}, "execution_strategy": "threaded",
                                      "resource_limits": {"memory_mb": 512, "time_seconds": 10},
                                      "streaming_inputs": False}}
CMDS = {
    "run_job": RUN,
    "ping": {"type": "ping"},
    "set_mode": {"command": "set_mode", "data": {"mode": "text"}},
    "reconnect": {"command": "reconnect_job", "data": {"job_id": "j", "since_seq": 4}},
    "cancel": {"command": "cancel_job", "data": {"job_id": "j"}},
    "status": {"command": "get_status", "data": {}},
    "stream_input": {"command": "stream_input", "data": {"job_id": "j", "input": "name", "value": "x", "handle": None}},
    "end_input": {"command": "end_input_stream", "data": {"job_id": "j", "input": "name", "handle": "output"}},
    "bad_data": {"command": "run_job", "data": [1, 2]},
}
for name, cmd in CMDS.items():
    write(f"{S}/text_{name}", b"\x00" + json.dumps(cmd).encode())
    write(f"{S}/bin_{name}", b"\x01" + mp(cmd))
write(f"{S}/bin_deep", b"\x01" + b"\x91" * 200 + b"\xc0")
write(f"{S}/text_deep", b"\x00" + b"[" * 200 + b"]" * 200)

# --- http_range: 8 bytes little-endian object size, then the header value ---
R = "corpus/http_range"
for i, (size, value) in enumerate([
    (1000, "bytes=0-499"), (1000, "bytes=500-"), (1000, "bytes=-200"), (1000, "bytes=9-3"),
    (1000, "bytes=0-0,5-9"), (0, "bytes=0-"), (10, "bytes=-0"), (10, "Bytes= 2 - 4 "),
    (2**64 - 1, "bytes=18446744073709551615-"), (5, "bytes=99999999999999999999999-"),
    (100, "items=0-5"), (100, '"abc123"'), (100, 'W/"abc", "def", *'), (1700000000, "Tue, 14 Nov 2023 22:13:20 GMT"),
]):
    write(f"{R}/seed_{i:02d}", struct.pack("<Q", size) + value.encode())
