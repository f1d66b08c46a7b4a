"""Helper of record.sh: builds the oracle's run request and writes a case's recording."""
import json, os, shutil, sys


def request(case):
    wf = json.load(open(os.path.join(case, "workflow.json")))
    params_path = os.path.join(case, "params.json")
    params = {}
    if os.path.exists(params_path):
        text = open(params_path).read().replace("{{CASE_DIR}}", os.path.abspath(case))
        text = text.replace("{{HTTP}}", os.environ.get("HTTP", "http://127.0.0.1:9"))
        params = json.loads(text)
    print(json.dumps({"graph": wf["graph"], "params": params, "user_id": "1", "auth_token": ""}))


def events(path):
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]


def finish(case, home):
    runs = []
    for i in (1, 2):
        evs = events(os.path.join(case, f".run{i}.jsonl"))
        rc = int(open(os.path.join(case, f".run{i}.rc")).read())
        final = [e for e in evs if e.get("type") == "job_update" and e.get("status") in ("completed", "failed", "cancelled")]
        status = final[-1]["status"] if final else "failed"
        result = final[-1].get("result") if final and status == "completed" else None
        error = final[-1].get("error") if final else None
        runs.append((evs, rc, status, result, error))
    norm = lambda r: json.dumps(strip(r[3]), sort_keys=True)
    if norm(runs[0]) != norm(runs[1]) or runs[0][2] != runs[1][2]:
        sys.exit(f"{case}: the two oracle runs disagree: {norm(runs[0])} vs {norm(runs[1])}")
    evs, rc, status, result, error = runs[0]
    with open(os.path.join(case, "events.jsonl"), "w") as f:
        for e in evs:
            f.write(json.dumps(e) + "\n")
    out = {"exit_code": rc, "status": status, "result": result}
    if error:
        out["error"] = error
    # Saved images: copy the file the oracle wrote, so the test can compare pixels.
    saved = {}
    for name, values in (result or {}).items():
        for i, v in enumerate(values):
            if isinstance(v, dict) and v.get("type") == "image" and v.get("asset_id"):
                src = find_asset(home, v["asset_id"])
                if src:
                    os.makedirs(os.path.join(case, "expected"), exist_ok=True)
                    dst = f"expected/{name}_{i}{os.path.splitext(src)[1]}"
                    shutil.copy(src, os.path.join(case, dst))
                    saved.setdefault(name, []).append(dst)
    if saved:
        out["images"] = saved
    json.dump(out, open(os.path.join(case, "outputs.json"), "w"), indent=2)


def find_asset(home, asset_id):
    for root, _, files in os.walk(home):
        for f in files:
            if f.startswith(asset_id):
                return os.path.join(root, f)
    return None


def strip(v):
    """Drop what differs between runs: ids and memory:// uris."""
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in ("asset_id", "uri", "job_id", "created_at")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


if __name__ == "__main__":
    {"request": lambda: request(sys.argv[2]), "finish": lambda: finish(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
