#!/usr/bin/env bash
# Import speed against the reference peer, one after the other on the same images:
#   1. `facegate import` into a fresh data directory, then again (idempotence);
#   2. the peer `insightface_pipeline.py throughput` (T=2) on the same files;
#   3. `facegate import --url` through a fresh `facegate serve --sandbox`.
# usage: scripts/bench_import_vs_peer.sh PERSON_FOLDERS_DIR OUT_DIR
# env:   PEER_PYTHONPATH  where the peer's packages are (pip install --target DIR
#                         opencv-python-headless numpy onnxruntime); SKIP_PEER=1 skips step 2.
# Build first: cargo build --release --locked. Nothing else should run on the machine meanwhile.
set -euo pipefail
images=${1:?usage: $0 PERSON_FOLDERS_DIR OUT_DIR}
out=${2:?usage: $0 PERSON_FOLDERS_DIR OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/facegate
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/data" "$out/served"
find "$images" -mindepth 2 -maxdepth 2 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort >"$out/files.txt"
echo "bench: $(wc -l <"$out/files.txt") images, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >&2

cd "$root"
"$bin" import "$images" --tenant bench --data-dir "$out/data" --json >"$out/import.json"
"$bin" import "$images" --tenant bench --data-dir "$out/data" --json >"$out/import_rerun.json"
echo "import: $(tr -d '\n ' <"$out/import.json")" >&2

if [ -z "${SKIP_PEER:-}" ]; then
    # shellcheck disable=SC2046 # one argument per file
    T=2 PYTHONPATH=${PEER_PYTHONPATH:-} python3 "$root/../shared/peers/insightface_pipeline.py" \
        .facegate/models/buffalo_s throughput $(cat "$out/files.txt") >"$out/peer.json"
    echo "peer: $(cat "$out/peer.json")" >&2
fi

"$bin" serve --sandbox --listen 127.0.0.1:0 --data-dir "$out/served" 2>"$out/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    addr=$(grep -o 'addr=[0-9.:]*' "$out/serve.log" | head -1 | cut -d= -f2 || true)
    [ -n "$addr" ] && curl -fs "http://$addr/readyz" >/dev/null && break
    sleep 0.2
done
FACEGATE_TOKEN=0e653da4969a757d21de0ffa6387d5fbd6401131 \
    "$bin" import "$images" --url "http://$addr" --json >"$out/import_url.json"
echo "import --url: $(tr -d '\n ' <"$out/import_url.json")" >&2
