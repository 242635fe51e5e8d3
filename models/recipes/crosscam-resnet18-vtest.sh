#!/usr/bin/env bash
# crosscam's own ResNet-18 re-id models (models/README.md), made with crosscam alone on this
# repository's vtest dataset. One command:
#   models/recipes/crosscam-resnet18-vtest.sh            (about 45 minutes on a 2-core CPU)
#
# 1. the dataset: vtest.avi as two virtual cameras, c2 darker and blurred (docs/evaluation.md)
# 2. crosscam-resnet18-vtest-c1: a ResNet-18 ×0.5 at 128×64 distilled from the ImageNet
#    MobileNetV2 on camera c1's training crops, then trained on c1's pseudo-identities
#    (the "source" model: it has never seen camera c2)
# 3. crosscam-resnet18-vtest: (2) re-tuned on site (scenario S4) on the tracklets of both cameras,
#    no labels (pseudo-identities by clustering)
# 4. crosscam-resnet18-vtest-half: (2) pruned to 50 % of its MACs (l1) and re-tuned the same way
#
# Deterministic on CPU for a given seed (burn Flex); ONNX Runtime's detector threads may change a
# tracklet here and there between machines, hence checksums in the manifest are of our run.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${CROSSCAM:-target/release/crosscam}"
DATA="${DATA:-data/vtest-a}"
OUT="${OUT:-models}"
REPORTS="${REPORTS:-docs/results}"
mkdir -p "$REPORTS"
[ -x "$BIN" ] || cargo build --release
if [ ! -f "$DATA/dataset.json" ]; then
  "$BIN" dataset build --video .deps/media/vtest.avi --out "$DATA" \
    --cameras "c1=0-5s,every=10s; c2=5-10s,every=10s,brightness=0.7,blur=1.0" \
    --queries-per-camera 3 --crops-per-camera 20
fi
"$BIN" train --arch resnet18 --width 0.5 --input 128x64 --dataset "$DATA" --source-cameras c1 \
  --distill 30ep --reid 30ep --seed 0 --out "$OUT/crosscam-resnet18-vtest-c1.onnx" \
  --report "$REPORTS/crosscam-resnet18-vtest-c1.json"
"$BIN" retune --model "$OUT/crosscam-resnet18-vtest-c1.onnx" --dataset "$DATA" --source-cameras c1 \
  --scenario S4 --target-macs 1 --budget 12ep --seed 0 --out "$OUT/crosscam-resnet18-vtest.onnx" \
  --report "$REPORTS/crosscam-resnet18-vtest.json"
"$BIN" retune --model "$OUT/crosscam-resnet18-vtest-c1.onnx" --dataset "$DATA" --source-cameras c1 \
  --scenario S4 --target-macs 0.5 --criterion l1 --budget 12ep --seed 0 \
  --out "$OUT/crosscam-resnet18-vtest-half.onnx" --report "$REPORTS/crosscam-resnet18-vtest-half.json"
