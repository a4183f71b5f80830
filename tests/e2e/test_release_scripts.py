"""The scripts on files laid out as the release writes them: evaluate, convert, finetune, resume."""
import pytest
import torch

from models import load_model_state
from utils.data import build_loaders
from utils.store.checkpoint import load_checkpoint
from utils.train.engine import evaluate

from helpers import SHORTCUTS, last_json, model_in, release_layout, resnet, run_script


@pytest.fixture(scope="module")
def release_files(tmp_path_factory, cifar10_root):
    """Release-layout files in all three forms; the bit one carries momentum (a real step)."""
    folder = tmp_path_factory.mktemp("release")
    bits = model_in("bits").train()
    optimizer = torch.optim.SGD(bits.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    bits(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    bits.eval()
    torch.save(release_layout(bits, optimizer), folder / "bits.pth.tar")
    for form in ("finetune", "float"):
        torch.save(release_layout(model_in(form)), folder / f"{form}.pth.tar")
    test_loader = build_loaders("cifar10", cifar10_root, 128, 100, "cpu")[1]
    return folder, f"--depth 8 --data-root {cifar10_root}", test_loader


@pytest.mark.parametrize("form", ["bits", "finetune"])
def test_scripts_evaluate_release_files(release_files, form):
    folder, common, test_loader = release_files
    path = folder / f"{form}.pth.tar"
    fig = last_json(run_script(folder, "cifar_finetune.py",
                               f"{common} --bin --evaluate --model {path}"))
    model = load_model_state(resnet(depth=8), load_checkpoint(path))
    assert fig["acc"] == round(evaluate(model, test_loader)["acc"], 4)


def test_convert_takes_a_release_float_model_and_a_release_scheme(release_files):
    folder, common, _ = release_files
    fig = last_json(run_script(folder, "convert.py", f"{common} --model float.pth.tar --dict "
                               "bits.pth.tar --checkpoint converted"))
    scheme = {k: v for k, v in release_layout(model_in("bits"))["Nbit_dict"].items()
              if k not in SHORTCUTS}
    expected = load_model_state(resnet(depth=8), load_checkpoint(folder / "float.pth.tar"))
    expected.to_bits_(scheme)
    converted = load_checkpoint(folder / "converted" / "model_best.pth.tar")
    assert fig["scheme"] == expected.scheme()
    for key, value in expected.state_dict().items():
        assert torch.equal(converted["state_dict"][key], value), key


def test_finetune_and_resume_from_a_release_bit_file(release_files):
    folder, common, _ = release_files
    fig = last_json(run_script(folder, "cifar_finetune.py", f"{common} --bin --model "
                               "bits.pth.tar --epochs 1 --checkpoint ft"))
    best = load_model_state(resnet(depth=8), load_checkpoint(folder / "ft" / "best_bin.pth.tar"))
    scheme = {k: v for k, v in release_layout(model_in("bits"))["Nbit_dict"].items()
              if k not in SHORTCUTS}  # the release's: an all-zero layer at 1 bit
    assert best.scheme() == fig["scheme"] == scheme
    # The file is at epoch 1 of 2 and no re-quantization falls on epoch 1: its momentum is used.
    run_script(folder, "cifar_prune_STE.py", f"{common} --bin --L1 --resume bits.pth.tar "
               "--epochs 2 --Prun_Int 2 --checkpoint resumed")
    resumed = load_checkpoint(folder / "resumed" / "checkpoint.pth.tar")
    assert resumed["epoch"] == 2
    rows = (folder / "resumed" / "log.txt").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["epoch", "2"]
