#!/usr/bin/env bash
# crosscam on an NVIDIA card: one prepared run for a GPU machine without network access.
#
#   scripts/gpu-check.sh            (after `make setup` and `cargo build --release` on that machine)
#
# Prints the card, runs `crosscam doctor` (and once more with runtime.device = "cuda", which fails
# unless CUDA starts), then the same benchmarks with --device cuda and --device cpu, one after the
# other: the embedders (full and 50 %-pruned ResNet-18 re-id models shipped in models/, plus any
# ONNX files listed in $EMBED_MODELS, space-separated) and the detector at batch 1 and 4.
# Every number is printed and kept under $GPU_CHECK_OUT (default gpu-check-<date>/).
# Exits non-zero, saying why, on a machine without a card or when any step fails.
#
# Knobs: CROSSCAM_BIN (default target/release/crosscam, else target/debug/crosscam),
#        ROUNDS (timed rounds per benchmark, default 20), EMBED_BATCH (crops per batch, default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "gpu-check: FAIL: $*" >&2; exit 1; }

BIN="${CROSSCAM_BIN:-}"
if [ -z "$BIN" ]; then
  BIN=target/release/crosscam
  [ -x "$BIN" ] || BIN=target/debug/crosscam
fi
[ -x "$BIN" ] || fail "no crosscam binary at $BIN (run \`cargo build --release\` first, or set CROSSCAM_BIN)"

# ---- the card ------------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 || fail "no NVIDIA card (nvidia-smi not found); this script is for a machine with one"
cards=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1) \
  || fail "no NVIDIA card (nvidia-smi failed: ${cards%%$'\n'*})"
[ -n "$cards" ] || fail "no NVIDIA card (nvidia-smi lists none)"
OUT="${GPU_CHECK_OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
ROUNDS="${ROUNDS:-20}"
EMBED_BATCH="${EMBED_BATCH:-16}"
{
  echo "== card (name, driver, memory)"
  echo "$cards"
  nvidia-smi | grep -m1 "CUDA Version" || true
  echo "== crosscam: $("$BIN" --version 2>/dev/null || echo "$BIN")"
} | tee "$OUT/card.txt"

# ---- doctor --------------------------------------------------------------------------------------
echo "== crosscam doctor"
"$BIN" doctor 2>"$OUT/doctor.log" | tee "$OUT/doctor.txt" || fail "crosscam doctor failed (see above and $OUT/doctor.log)"
printf '[runtime]\ndevice = "cuda"\n' > "$OUT/cuda.toml"
echo "== crosscam doctor with runtime.device = \"cuda\""
"$BIN" doctor --config "$OUT/cuda.toml" 2>"$OUT/doctor-cuda.log" | tee "$OUT/doctor-cuda.txt" \
  || fail "CUDA does not start (see the FAIL lines above and $OUT/doctor-cuda.log)"

# ---- benchmarks: the same run on each device -----------------------------------------------------
models=(models/crosscam-resnet18-vtest.onnx models/crosscam-resnet18-vtest-half.onnx)
for m in ${EMBED_MODELS:-}; do
  [ -f "$m" ] || fail "EMBED_MODELS names $m, which does not exist"
  models+=("$m")
done
model_args=()
for m in "${models[@]}"; do model_args+=(--model "$m"); done

for dev in cuda cpu; do
  echo "== bench embed --device $dev (batch $EMBED_BATCH, $ROUNDS rounds)"
  "$BIN" bench embed --device "$dev" "${model_args[@]}" --batch "$EMBED_BATCH" --rounds "$ROUNDS" \
      2>>"$OUT/bench.log" | tee "$OUT/embed-$dev.txt" || fail "bench embed --device $dev failed (see $OUT/bench.log)"
done
for dev in cuda cpu; do
  for b in 1 4; do
    echo "== bench detect --device $dev --batch $b ($ROUNDS rounds)"
    "$BIN" bench detect --device "$dev" --model nanodet-416 --batch "$b" --rounds "$ROUNDS" \
        2>>"$OUT/bench.log" | tee "$OUT/detect-$dev-b$b.txt" || fail "bench detect --device $dev --batch $b failed (see $OUT/bench.log)"
  done
done
echo "gpu-check: done; everything above is also in $OUT/"
