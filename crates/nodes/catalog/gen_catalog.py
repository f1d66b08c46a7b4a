"""Writes nodetool-base.json, the catalog of node types NodeTool's Python base package ships,
from that package's own metadata file (src/nodetool/package_metadata/nodetool-base.json).

Usage: python3 gen_catalog.py BASE_GIT [REV]   (BASE_GIT: a git dir of nodetool-ai/nodetool-base;
REV defaults to 50bbc4e, the revision the oracle and the fixtures use).

Only interface facts are kept: type names, property and output names with their NodeTool type
strings, the settings a node declares it needs, and whether it streams or takes dynamic
properties. Descriptions are not copied.
"""
import json, subprocess, sys


def type_string(t):
    name = t.get("type", "any")
    args = t.get("type_args") or []
    if args and name in ("list", "dict", "union", "tuple"):
        return f"{name}[{', '.join(type_string(a) for a in args)}]"
    return name


def main():
    git, rev = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "50bbc4e")
    meta = json.loads(subprocess.check_output(
        ["git", "-C", git, "show", f"{rev}:src/nodetool/package_metadata/nodetool-base.json"]))
    nodes = []
    for n in sorted(meta["nodes"], key=lambda n: n["node_type"]):
        nodes.append({
            "type": n["node_type"],
            "title": n.get("title", ""),
            "properties": [[p["name"], type_string(p["type"])] for p in n.get("properties") or []],
            "outputs": [[o["name"], type_string(o["type"])] for o in n.get("outputs") or []],
            "settings": n.get("required_settings") or [],
            "streaming": bool(n.get("is_streaming_output")),
            "dynamic": bool(n.get("is_dynamic")),
        })
    out = {"package": meta["name"], "version": meta.get("version", ""), "revision": rev, "nodes": nodes}
    with open("nodetool-base.json", "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(nodes)} node types")


if __name__ == "__main__":
    main()
