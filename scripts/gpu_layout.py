#!/usr/bin/env python3
"""Lays out the GPU ONNX Runtime and the CUDA/cuDNN libraries from downloaded wheels.

    gpu_layout.py --ort-version 1.31.1 --ort-out .deps/onnxruntime-gpu --cuda-out .deps/cuda/lib WHEEL...
    gpu_layout.py --check-cuda .deps/cuda/lib     exit 0 when every library below is there
    gpu_layout.py --print-required                the CUDA/cuDNN file names, one a line

From the onnxruntime-gpu wheel: libonnxruntime.so.<version> and the provider libraries next to it
(ONNX Runtime loads its providers from the core library's folder), plus libonnxruntime.so -> the
core library. From the nvidia-* wheels: exactly the CUDA/cuDNN libraries crosscam preloads (list
below, the same as src/runtime/gpu.rs), flat in one folder; their other files are skipped.

Every wheel is checked before anything is written: a member path that is absolute or climbs out of
the wheel (`..`) refuses the whole run. Output goes to `<dir>.part` first and replaces `<dir>` only
when complete, so an interrupted run never leaves a half-installed folder that looks finished.
Uses only the standard library.
"""
import argparse
import os
import shutil
import sys
import zipfile

# (wheel, file names under nvidia/*/lib/) -- keep in step with CUDA_PACKAGES in src/runtime/gpu.rs.
CUDA_LIBS = [
    ("nvidia-cuda-runtime", ["libcudart.so.13"]),
    ("nvidia-nvjitlink", ["libnvJitLink.so.13"]),
    ("nvidia-cuda-nvrtc", ["libnvrtc.so.13", "libnvrtc-builtins.so.13.0"]),
    ("nvidia-cublas", ["libcublasLt.so.13", "libcublas.so.13"]),
    ("nvidia-curand", ["libcurand.so.10"]),
    ("nvidia-cufft", ["libcufft.so.12"]),
    ("nvidia-cudnn-cu13", [
        "libcudnn.so.9", "libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_heuristic.so.9",
        "libcudnn_cnn.so.9", "libcudnn_adv.so.9", "libcudnn_engines_precompiled.so.9",
        "libcudnn_engines_runtime_compiled.so.9", "libcudnn_engines_tensor_ir.so.9",
        "libcudnn_ext.so.9",
    ]),
]
REQUIRED = [name for _, names in CUDA_LIBS for name in names]
ORT_REQUIRED = ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"]
ORT_OPTIONAL = ["libonnxruntime_providers_tensorrt.so"]


class LayoutError(Exception):
    pass


def safe_members(path):
    """The wheel's member names, after refusing any that would escape the output folder."""
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise LayoutError(f"{path}: not a readable wheel (zip): {e}")
    with z:
        names = z.namelist()
    for n in names:
        parts = n.replace("\\", "/").split("/")
        if n.startswith("/") or n.startswith("\\") or ".." in parts or (len(n) > 1 and n[1] == ":"):
            raise LayoutError(f"{path}: member {n!r} escapes the wheel's folder; refusing this wheel")
    return names


def copy_member(z, member, dest):
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(dest, 0o755)


def layout(wheels, ort_version, ort_out, cuda_out):
    core = f"onnxruntime/capi/libonnxruntime.so.{ort_version}"
    plan_ort, plan_cuda = None, {}
    for w in wheels:
        names = safe_members(w)
        if any(n.startswith("onnxruntime/capi/libonnxruntime.so.") for n in names):
            if core not in names:
                found = [n for n in names if n.startswith("onnxruntime/capi/libonnxruntime.so.")]
                raise LayoutError(f"{w}: has {found}, not {core} (wrong onnxruntime-gpu version?)")
            if plan_ort is not None:
                raise LayoutError(f"two ONNX Runtime wheels: {plan_ort[0]} and {w}")
            members = [core]
            for lib in ORT_REQUIRED + ORT_OPTIONAL:
                m = "onnxruntime/capi/" + lib
                if m in names:
                    members.append(m)
                elif lib in ORT_REQUIRED:
                    raise LayoutError(f"{w}: no {m}; is this the onnxruntime-gpu wheel?")
            plan_ort = (w, members)
            continue
        libs = [n for n in names
                if n.startswith("nvidia/") and n.split("/")[-2:-1] == ["lib"] and os.path.basename(n) in REQUIRED]
        if not libs and not any(n.startswith("nvidia/") for n in names):
            raise LayoutError(f"{w}: neither the onnxruntime-gpu wheel nor an nvidia-* library wheel")
        for n in libs:
            b = os.path.basename(n)
            if b in plan_cuda:
                raise LayoutError(f"{b} is in two wheels: {plan_cuda[b][0]} and {w}")
            plan_cuda[b] = (w, n)
    if plan_ort is None:
        raise LayoutError("no onnxruntime-gpu wheel among the inputs")
    missing = [b for b in REQUIRED if b not in plan_cuda]
    if missing:
        raise LayoutError("CUDA/cuDNN libraries missing from the wheels: " + ", ".join(missing))

    written = []
    for out, items in ((ort_out, [(plan_ort[0], m) for m in plan_ort[1]]),
                       (cuda_out, [plan_cuda[b] for b in REQUIRED])):
        part = out.rstrip("/") + ".part"
        shutil.rmtree(part, ignore_errors=True)
        os.makedirs(part)
        for w, m in items:
            with zipfile.ZipFile(w) as z:
                dest = os.path.join(part, os.path.basename(m))
                copy_member(z, m, dest)
                written.append((os.path.join(out, os.path.basename(m)), os.path.getsize(dest)))
        if out == ort_out:
            os.symlink(os.path.basename(core), os.path.join(part, "libonnxruntime.so"))
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        os.rename(part, out)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ort-version")
    ap.add_argument("--ort-out")
    ap.add_argument("--cuda-out")
    ap.add_argument("--check-cuda", metavar="DIR")
    ap.add_argument("--print-required", action="store_true")
    ap.add_argument("wheels", nargs="*")
    a = ap.parse_args()
    if a.print_required:
        print("\n".join(REQUIRED))
        return 0
    if a.check_cuda:
        missing = [b for b in REQUIRED if not os.path.isfile(os.path.join(a.check_cuda, b))]
        if missing:
            print(f"gpu_layout: missing in {a.check_cuda}: {', '.join(missing)}", file=sys.stderr)
            return 1
        return 0
    if not (a.ort_version and a.ort_out and a.cuda_out and a.wheels):
        ap.error("--ort-version, --ort-out, --cuda-out and at least one wheel are needed")
    try:
        written = layout(a.wheels, a.ort_version, a.ort_out, a.cuda_out)
    except LayoutError as e:
        print(f"gpu_layout: {e}", file=sys.stderr)
        return 1
    total = sum(s for _, s in written)
    for p, s in written:
        print(f"  {p} ({s / 1e6:.1f} MB)")
    print(f"gpu_layout: {len(written)} libraries, {total / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
