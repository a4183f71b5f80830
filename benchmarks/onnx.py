"""ONNX export of BSQ models: file sizes, and ONNX Runtime's CPU latency against PyTorch's.

For each ``--models`` checkpoint (bit or finetune form): the ONNX file with integer weights
(``models/onnx.py``) against the same graph with float32 weights and against the paper's size
TB/8; milliseconds per image at batch 1 and at batch 100 through ONNX Runtime (CPU) and through
PyTorch eager on the same CPU, with the same thread count, timed interleaved (ORT, PyTorch, ORT,
...) so that machine noise hits both alike, medians over the repeats. With ``--data-root``, also
both on the test split (``models.onnx.compare``), and PyTorch against itself with channels-last
inputs: a baseline of how far two fp32 kernels of one model drift apart through the activation
quantizer's rounding. One JSON line naming the device.

    python benchmarks/onnx.py --data-root data --models \
        ../shared/reference/release-checkpoints/resnet-20-8bit.pth.tar \
        checkpoints/cifar10/xxx-ft/best_bin.pth.tar
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial

# The repository instead of this folder, where this file would shadow the onnx package.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from models import load_model  # noqa: E402
from models.onnx import compare, graph_sizes, logits, session  # noqa: E402
from utils.data import build_loaders  # noqa: E402

BATCHES = (1, 100)


def cpu_name():
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.processor()


def median_ms_per_image(run, x, repeats):
    """Per repeat: one call of ``run(x)``; the median, in milliseconds per image."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / len(x)


@torch.no_grad()
def measure(path, args):
    model, _ = load_model(path, depth=args.depth, act=args.act, num_classes=args.classes)
    model.eval()
    data, float_bytes, paper = graph_sizes(model)
    sess = session(data, args.threads)
    result = {"model": path, "scheme_avg_bits": round(model.avg_bits(), 4),
              "onnx_bytes": len(data), "float32_onnx_bytes": float_bytes, "paper_bytes": paper,
              "float32_over_onnx": round(float_bytes / len(data), 3)}
    runs = {"onnxruntime": partial(logits, sess), "pytorch": model}
    for batch in BATCHES:
        x = torch.randn(batch, 3, 32, 32)
        for run in runs.values():  # warm-up
            run(x)
        timed = {name: [] for name in runs}
        for _ in range(args.rounds):  # interleaved
            for name, run in runs.items():
                timed[name].append(median_ms_per_image(run, x, args.repeats))
        for name, values in timed.items():
            result[f"{name}_ms_per_image_batch{batch}"] = round(statistics.median(values), 4)
        result[f"speedup_batch{batch}"] = round(
            result[f"pytorch_ms_per_image_batch{batch}"]
            / result[f"onnxruntime_ms_per_image_batch{batch}"], 3)
    if args.data_root:
        dataset = "cifar10" if args.classes == 10 else "cifar100"
        _, test = build_loaders(dataset, args.data_root, 128, 100, torch.device("cpu"))
        vs_ort = compare(model, partial(logits, sess), test)
        vs_cl = compare(model, lambda x: model(x.contiguous(memory_format=torch.channels_last)),
                        test)
        result.update({"acc": vs_ort["acc"], "onnx_acc": vs_ort["other_acc"],
                       "onnx_agree": vs_ort["agree"],
                       "onnx_max_logit_diff": vs_ort["max_logit_diff"],
                       "channels_last_acc": vs_cl["other_acc"],
                       "channels_last_agree": vs_cl["agree"],
                       "channels_last_max_logit_diff": vs_cl["max_logit_diff"]})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, metavar="CKPT",
                        help="bit or finetune checkpoints (ours or the release's)")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--act", type=int, default=4)
    parser.add_argument("--classes", type=int, default=10, choices=(10, 100))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=20, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timings per runtime")
    parser.add_argument("--data-root", default="", help="also compare on this test split")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(path, args) for path in args.models]
    print(json.dumps({"device": f"CPU: {cpu_name()} ({args.threads} threads)",
                      "torch": torch.__version__, "onnxruntime": ort.__version__,
                      "results": results}))


if __name__ == "__main__":
    main()
