#!/usr/bin/env bash
# Every benchmark behind docs/PERFORMANCE.md, one after another (run it on a quiet machine; it
# takes about 30 minutes on 2 cores). Results go to $OUT (default bench-out/), one file each.
#   benches/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
B="${CROSSCAM:-target/release/crosscam}"
OUT="${OUT:-bench-out}"
mkdir -p "$OUT"
[ -x "$B" ] || cargo build --release
uptime > "$OUT/uptime-start.txt"
for b in 1 8 32; do
  "$B" bench embed --model models/mobilenetv2-imagenet.onnx --model models/crosscam-resnet18-vtest.onnx \
    --model models/crosscam-resnet18-vtest-half.onnx --batch "$b" --rounds 10 > "$OUT/embed-b$b.txt" 2>&1
done
"$B" bench pipeline --seconds 15 --max-cameras 8 > "$OUT/pipeline.txt" 2>&1
"$B" bench decode > "$OUT/decode.txt" 2>&1
"$B" bench detect --batch 1,4 > "$OUT/detect.txt" 2>&1
"$B" bench gallery > "$OUT/gallery.txt" 2>&1
"$B" model build --arch resnet50 --reid --random-stats --out "$OUT/r50.onnx" > "$OUT/prune.txt" 2>&1
"$B" prune --model "$OUT/r50.onnx" --out "$OUT/r50-half.onnx" --criterion l1 --target-macs 0.5 >> "$OUT/prune.txt" 2>&1
"$B" prune --model "$OUT/r50.onnx" --out "$OUT/r50-half-r16.onnx" --criterion l1 --target-macs 0.5 \
  --round-to 16 --min-channels 16 >> "$OUT/prune.txt" 2>&1
"$B" prune --model "$OUT/r50.onnx" --out "$OUT/r50-half-g16.onnx" --criterion l1 --target-macs 0.5 \
  --round-to 16 --min-channels 16 --scope global >> "$OUT/prune.txt" 2>&1
"$B" bench embed --model "$OUT/r50.onnx" --model "$OUT/r50-half.onnx" --model "$OUT/r50-half-r16.onnx" \
  --model "$OUT/r50-half-g16.onnx" --batch 16 --rounds 12 > "$OUT/prune-bench.txt" 2>&1
"$B" bench eval --repeat 5 > "$OUT/eval.txt" 2>&1
# the API under load needs wrk (Debian package)
command -v wrk >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; }
"$B" bench api --seconds 30 --clients 200 --wrk-seconds 10 > "$OUT/api.txt" 2>&1
uptime > "$OUT/uptime-end.txt"
