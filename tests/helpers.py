"""What several test modules share: the repository path, running a script, test models."""
import json
import os
import subprocess
import sys

import torch

from models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(cwd, script, args, expect=0, timeout=600):
    """Run ``script`` of the repository with ``args`` (a string) in ``cwd``; check its status."""
    args = args.split() if isinstance(args, str) else list(args)
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def last_json(proc):
    """The JSON object on the last stdout line of a script."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mixed_model(act=4, form="bits", continuous=False):
    """A ResNet-8 at precisions 0..7 per layer with a 3-bit classifier bias and random BN
    statistics; ``continuous``: bit planes perturbed off 0/1, as in the middle of BSQ training."""
    torch.manual_seed(1)
    model = build_model(depth=8, act=act)
    scheme = {name: [i % 8, 0] for i, (name, _) in enumerate(model.quant_layers())}
    scheme["fc"] = [5, 3]
    model.to_bits_(scheme)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
        if continuous:
            for _, layer in model.quant_layers():
                for p, n, _ in layer.bit_groups():
                    p.add_(torch.rand_like(p) * 0.9).clamp_(0, 2)
                    n.add_(torch.rand_like(n) * 0.9).clamp_(0, 2)
    return model.to_finetune_() if form == "finetune" else model
