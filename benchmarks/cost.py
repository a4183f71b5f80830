"""What BSQ costs against float training of the same network: trainable parameters, peak memory
of a training step, and step time, for float weights, BSQ at 8 bits, BSQ after planes are
dropped (``--low-bits``, 4 by default) and finetuning at that precision.

Each variant is the step the scripts run (``utils.train.engine.build_steps``: BSQ with the
regularizer at alpha 0.01 and the clamp, finetuning with its clamp, float without either; the
same activation quantizers, ``--act``), on one fixed random batch, in a process of its own, so
that its peak memory is its own: on CUDA ``torch.cuda.max_memory_allocated`` (weights, bit
planes, gradients, momentum, activations, CUDA-graph pools); on the CPU the peak resident set
during its steps less what the process held before them, plus the model's own tensors (Linux's
``VmHWM``, reset through ``/proc/self/clear_refs``: imports, libraries and the tracing that
built the model are left out). On CUDA each step is replayed as a CUDA graph, as the scripts do
on one GPU (``--no-cuda-graphs``: eager). The variants' processes stay up and are timed
interleaved (float, bsq8, bsq4, finetune, float, ...), ``--steps`` steps per turn, so that a
shared machine's noise hits them alike; medians of the per-step times. One JSON line per
network, naming the device.

Networks: ``resnet20`` (the release's CIFAR ResNet-20, 10 classes, 32x32), ``resnet18`` and
``resnet50`` (torchvision's, 1000 classes, ``--crop`` x ``--crop`` inputs), or any ``-a`` name.

    python benchmarks/cost.py --batch 16 --crop 224                       # this CPU
    python benchmarks/cost.py --batch 128 --crop 224 --rounds 5 --steps 10  # one GPU
    python benchmarks/cost.py --networks resnet20 --batch 4 --crop 64 --rounds 1 --steps 1
"""
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model, get_arch  # noqa: E402
from utils.cli.flags import Parser, number  # noqa: E402
from utils.train.engine import Speed, build_steps, make_optimizer  # noqa: E402

NETWORKS = {"resnet20": ("resnet", {"depth": 20}, 10, 32)}  # name -> (arch, flags, classes, size)
ALPHA = 0.01  # the CIFAR recipe's


def variants(low_bits):
    """``{name: (form and precision, regularizer alpha, clamp)}`` of the four variants."""
    return {"float": ("float", 0.0, False), "bsq8": (8, ALPHA, True),
            f"bsq{low_bits}": (low_bits, ALPHA, True),
            f"finetune{low_bits}": (f"finetune{low_bits}", 0.0, True)}


def network(name, crop):
    """``(arch, flags, classes, input size)`` of a network name of ``--networks``."""
    if name in NETWORKS:
        return NETWORKS[name]
    return name, {}, 1000, crop


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"CPU, {model}, {os.cpu_count()} cores"


def status_mb(field):
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, MiB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def reset_peak():
    """Start ``VmHWM`` again from the current resident set (Linux's ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(conn, spec, batch, size, act, device_type, cuda_graphs):
    """One variant in its own process: build, then answer ``("time", steps)`` with the seconds
    of each step, and ``("stats",)`` with its trainable parameters and peak memory."""
    device = torch.device(device_type)
    arch, flags, classes, form, decay, clamp = spec
    torch.manual_seed(0)
    model = build_model(arch, classes, act, **flags)
    if form != "float":
        precision = int(str(form).removeprefix("finetune"))
        model.to_bits_(precision)
        if str(form).startswith("finetune"):
            model.to_finetune_()
    model.to(device).train()
    speed = Speed(cuda_graphs=cuda_graphs)
    step = build_steps(model, make_optimizer(model, 0.01, 0.9, 1e-4), device, speed, decay,
                       clamp)[0]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    state_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2 ** 20
    if device.type == "cpu":  # the peak from here on, plus the model already resident
        base = status_mb("VmRSS") - state_mb
        reset_peak()
    conn.send("ready")
    while True:
        command = conn.recv()
        if command[0] == "time":
            seconds = []
            for _ in range(command[1]):
                start = time.perf_counter()
                step(x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
            conn.send(seconds)
        elif command[0] == "stats":
            peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda"
                    else status_mb("VmHWM") - base)
            conn.send({"trainable_params": trainable, "peak_memory_mb": round(peak, 1)})
        else:
            conn.close()
            return


def measure(name, args, device):
    """The JSON record of network ``name``: every variant started in its own process, warmed
    up, timed in turns."""
    arch, flags, classes, size = network(name, args.crop)
    graphs = device.type == "cuda" and args.cuda_graphs
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    for variant, (form, decay, clamp) in variants(args.low_bits).items():
        parent, child = ctx.Pipe()
        spec = (arch, flags, classes, form, decay, clamp)
        procs[variant] = ctx.Process(target=worker, args=(child, spec, args.batch, size,
                                                          args.act, device.type, graphs))
        procs[variant].start()
        conns[variant] = parent
        assert parent.recv() == "ready"
    try:
        for conn in conns.values():  # warm-up steps (CUDA graph capture), untimed
            conn.send(("time", args.warmup))
            conn.recv()
        times = {variant: [] for variant in conns}
        for _ in range(args.rounds):
            for variant, conn in conns.items():
                conn.send(("time", args.steps))
                times[variant] += conn.recv()
        stats = {}
        for variant, conn in conns.items():
            conn.send(("stats",))
            stats[variant] = {**conn.recv(),
                              "step_ms": round(1000 * statistics.median(times[variant]), 2)}
            conn.send(("stop",))
    finally:
        for proc in procs.values():
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    base = stats["float"]
    ratios = {variant: {"params": round(s["trainable_params"] / base["trainable_params"], 3),
                        "memory": round(s["peak_memory_mb"] / base["peak_memory_mb"], 3),
                        "time": round(s["step_ms"] / base["step_ms"], 3)}
              for variant, s in stats.items() if variant != "float"}
    return {"benchmark": "cost", "network": get_arch(arch).title_of(flags),
            "device": device_name(device), "batch": args.batch, "input": [3, size, size],
            "act": args.act, "cuda_graphs": graphs, "warmup": args.warmup,
            "rounds": args.rounds, "steps": args.steps, "variants": stats,
            "ratio_to_float": ratios, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["resnet20", "resnet18", "resnet50"],
                        help="resnet20 (CIFAR, 32x32) or any -a name (1000 classes, --crop)")
    parser.add_argument("--batch", type=number(int, 1), default=16)
    parser.add_argument("--crop", type=number(int, 32), default=224,
                        help="input side of the ImageNet networks")
    parser.add_argument("--low-bits", type=number(int, 1, 7), default=4,
                        help="the precision after planes are dropped")
    parser.add_argument("--act", type=number(int, 0, 8), default=4)
    parser.add_argument("--warmup", type=number(int, 1), default=5,
                        help="untimed steps per variant first (on CUDA 3 eager ones, then the "
                             "graph capture)")
    parser.add_argument("--rounds", type=number(int, 1), default=3)
    parser.add_argument("--steps", type=number(int, 1), default=3, help="steps per turn")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="eager steps on CUDA")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name in args.networks:
        print(json.dumps(measure(name, args, device)), flush=True)


if __name__ == "__main__":
    main()
