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
