"""The README's Python path runs as printed: its ``mynet.py`` and its snippet, extracted from the
README, in a fresh interpreter, as a reader would run them."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_the_python_snippet_runs_as_printed(tmp_path):
    blocks = python_blocks()
    network = next(b for b in blocks if b.startswith("# mynet.py"))
    snippet = next(b for b in blocks if "to_bit_layers_(" in b)
    (tmp_path / "mynet.py").write_text(network)
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True"]  # both paths give the same scheme


def test_both_python_paths_build_the_same_model_in_every_form(tmp_path, monkeypatch):
    """``build_model("mynet.py:mynet")`` and the snippet's step-by-step swap with its defaults are
    one model: the same parameters and outputs in float, bits and finetune form, the README
    network's conv biases included (the finetune form keeps them on both paths)."""
    import torch

    from models import build_model, make_bit_model, quantize_activations_, to_bit_layers_
    from models.activation import ActQuantizer

    network = next(b for b in python_blocks() if b.startswith("# mynet.py"))
    (tmp_path / "mynet.py").write_text(network)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from mynet import mynet

    built = build_model("mynet.py:mynet", num_classes=10, act=4)
    net = mynet()
    to_bit_layers_(net)
    twin = make_bit_model(net, forward=quantize_activations_(net, lambda: ActQuantizer(4)))
    twin.load_state_dict(built.state_dict())
    x = torch.randn(4, 3, 32, 32)
    for form in ("float", "bits", "finetune"):
        if form != "float":
            for model in (built, twin):
                model.to_bits_(4) if form == "bits" else model.to_finetune_()
        a, b = dict(built.named_parameters()), dict(twin.named_parameters())
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), form
        with torch.no_grad():
            assert torch.equal(built.eval()(x), twin.eval()(x)), form
    biases = [m for m in twin.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert biases and all(m.uses("bias") for m in biases)  # in finetune form
