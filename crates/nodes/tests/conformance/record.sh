#!/usr/bin/env bash
# Records conformance cases with the original Python NodeTool (the oracle of
# ../../../../../shared/oracle/README.md): for each CASE folder, runs CASE/workflow.json (with
# CASE/params.json as the job params, if present) twice, checks that both runs give the same
# result, and writes CASE/events.jsonl and CASE/outputs.json. Image outputs saved with
# nodetool.image.SaveImage are copied from the oracle's asset folder to CASE/expected/ so the
# test compares pixels. Usage: record.sh [CASE...] (default: every case). Needs NT (the oracle's
# nt.sh; default ~/.cache/nodetool-oracle/nt.sh).
set -euo pipefail
NT=${NT:-$HOME/.cache/nodetool-oracle/nt.sh}
here=$(cd "$(dirname "$0")" && pwd)
cases=("$@")
[ ${#cases[@]} -gt 0 ] || mapfile -t cases < <(cd "$here" && ls -d */ | tr -d /)
python=$(dirname "$(readlink -f "$NT")")/venv/bin/python
home=$(dirname "$(readlink -f "$NT")")/home
for c in "${cases[@]}"; do
  dir=$here/$c
  req=$dir/.request.json
  # {{HTTP}} in params.json: a local server for CASE/files during the recording.
  server=
  if [ -d "$dir/files" ]; then
    port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$python" -m http.server "$port" --bind 127.0.0.1 --directory "$dir/files" > /dev/null 2>&1 &
    server=$!
    export HTTP="http://127.0.0.1:$port"
    sleep 1
  fi
  "$python" "$here/record.py" request "$dir" > "$req"
  for run in 1 2; do
    set +e
    (cd "$dir" && "$NT" run "$req" --jsonl --show-node-updates --show-outputs > "$dir/.run$run.jsonl" 2> "$dir/.run$run.err")
    echo $? > "$dir/.run$run.rc"
    set -e
  done
  [ -z "$server" ] || kill "$server"
  "$python" "$here/record.py" finish "$dir" "$home"
  rm -f "$req" "$dir"/.run*
  echo "recorded $c"
done
