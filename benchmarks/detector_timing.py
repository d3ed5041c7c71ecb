"""Detector architectures timed on this machine: a training step and inference fields/s at batch 1 and 8.

Usage: ``python -m benchmarks.detector_timing [THREADS]``; prints a markdown table (copied into docs/detector.md).
torchvision builders get ``weights=None, weights_backbone=None`` (no download; timing does not depend on weights).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

CLASSES = ("WBC", "RBC", "Platelets")


def _seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def _centernet(stride: int, size: int, batch: int, train_side: int):
    from leukolens.losses.detection import centernet_targets, detection_loss
    from leukolens.models.detector import CenterNet, DetectorConfig, PeakOutputs

    model = CenterNet(DetectorConfig(CLASSES, stride=stride), pretrained=False).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    images = torch.randn(batch, 3, train_side, train_side).contiguous(memory_format=torch.channels_last)
    boxes = [np.array([[10, 10, 90, 90], [150, 150, 175, 175]], np.float32)] * batch
    labels = [np.array([0, 2])] * batch

    def step():
        model.train()
        out = model(images)
        targets = centernet_targets(boxes, labels, num_classes=3, output_size=tuple(out.heatmap.shape[-2:]),
                                    stride=stride)
        loss = detection_loss(out, targets)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    network = PeakOutputs(model.eval())

    def infer(n: int):
        x = torch.randn(n, 3, size * 3 // 4, size).contiguous(memory_format=torch.channels_last)  # 640x480 field

        def run():
            with torch.inference_mode():
                network(x)

        return run

    return step, infer


def _torchvision(name: str, batch: int, side: int):
    import torchvision.models.detection as detection

    if name == "ssdlite320":
        model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    else:
        model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=4)
    optimizer = torch.optim.SGD(model.parameters(), 1e-4)
    images = [torch.rand(3, side, side) for _ in range(batch)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 90, 90], [150, 150, 175, 175]]), "labels": torch.tensor([1, 3])}
               for _ in range(batch)]

    def step():
        model.train()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer(n: int):
        fields = [torch.rand(3, 480, 640) for _ in range(n)]

        def run():
            model.eval()
            with torch.inference_mode():
                model(fields)

        return run

    return step, infer


def _onnx_fields_per_second(stride: int, size: int, n: int, threads: int) -> float:
    import os
    import tempfile

    import onnxruntime

    from leukolens.models.detector import CenterNet, DetectorConfig, PeakOutputs

    network = PeakOutputs(CenterNet(DetectorConfig(CLASSES, stride=stride), pretrained=False).eval())
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "d.onnx")
        torch.onnx.export(network, torch.zeros(1, 3, size * 3 // 4, size), path, input_names=["images"],
                          dynamic_axes={"images": {0: "batch"}}, opset_version=17, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        x = np.random.randn(n, 3, size * 3 // 4, size).astype(np.float32)
        return n / _seconds(lambda: session.run(None, {"images": x}), 5)


def timing_table(threads: int = 2) -> str:
    torch.set_num_threads(threads)
    rows = []
    variants = [
        ("CenterNet, EfficientNet-Lite0, stride 8 (ours)", lambda b, s: _centernet(8, 512, b, s)),
        ("CenterNet, EfficientNet-Lite0, stride 4", lambda b, s: _centernet(4, 512, b, s)),
        ("torchvision ssdlite320_mobilenet_v3_large", lambda b, s: _torchvision("ssdlite320", b, s)),
        ("torchvision fasterrcnn_mobilenet_v3_large_320_fpn", lambda b, s: _torchvision("frcnn320", b, s)),
    ]
    for name, build in variants:
        step4, infer = build(4, 512)
        step8, _ = build(8, 320)
        train4 = _seconds(step4, 2)
        train8 = _seconds(step8, 2)
        batch1 = 1 / _seconds(infer(1), 5)
        batch8 = 8 / _seconds(infer(8), 2)
        rows.append((name, train4, train8, batch1, batch8))
        print(rows[-1], file=sys.stderr, flush=True)
    lines = [
        f"| model ({threads} threads) | train step, batch 4 at 512 (s) | train step, batch 8 at 320 (s) | "
        "inference 640x480 fields/s, batch 1 | batch 8 |",
        "|---|---|---|---|---|",
    ]
    for name, train4, train8, batch1, batch8 in rows:
        lines.append(f"| {name} | {train4:.2f} | {train8:.2f} | {batch1:.1f} | {batch8:.1f} |")
    for stride in (8, 4):
        one = _onnx_fields_per_second(stride, 512, 1, threads)
        eight = _onnx_fields_per_second(stride, 512, 8, threads)
        lines.append(f"| CenterNet stride {stride}, ONNX Runtime | - | - | {one:.1f} | {eight:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(timing_table(int(sys.argv[1]) if len(sys.argv) > 1 else 2))
