"""The published models (``results/``) are what their tables say: each packed file, rebuilt and
evaluated as ``export.py --load FILE --evaluate`` does on the JPEG CIFAR-10 of ``../shared``,
gives the accuracy recorded in its ``models.json`` (``results/collect.py`` wrote both): every file
on the check sample (every 10th test image), the first one on the whole test set.

The figures were recorded on an AVX2 CPU. Another CPU's kernels round fp32 otherwise, and a
batch's activation range with them, which flips a few near ties: on an AVX-512 machine 4 of the
10,000 test images and 2 of the 1,000 of the sample (results/README.md gives the variables that
make it compute as the AVX2 one, and its figures exactly). So a figure may differ by up to
``FLIPS`` images, and no more."""
import glob
import json
import os
import subprocess
import sys

import pytest

from models.packed import unpack
from utils.data.cifar import load_cifar

from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "results"))
from collect import SAMPLE, accuracy  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), "shared")
ARCHIVE = os.path.join(SHARED, "data", "cifar10-jpg.tar.gz")
TOOL = os.path.join(SHARED, "tools", "cifar_jpg_to_batches.py")
FLIPS = 5  # test images a CPU of other vector instructions may classify otherwise (above)
PUBLISHED = sorted((os.path.join(os.path.dirname(index), name), acc)
                   for index in glob.glob(os.path.join(REPO, "results", "**", "models.json"),
                                          recursive=True)
                   for name, acc in json.load(open(index)).items())


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    if not os.path.isfile(ARCHIVE) or not os.path.isfile(TOOL):
        pytest.skip(f"the JPEG CIFAR-10 is not at {ARCHIVE}")
    root = tmp_path_factory.mktemp("jpeg")
    subprocess.run([sys.executable, TOOL, "--archive", ARCHIVE, "--out", str(root)], check=True,
                   capture_output=True)
    return load_cifar("cifar10", str(root), train=False, download=False)


def test_every_published_packed_file_is_listed_with_its_accuracy():
    files = sorted(glob.glob(os.path.join(REPO, "results", "**", "*.bsq"), recursive=True))
    assert files == [path for path, _ in PUBLISHED]


@pytest.mark.parametrize("path, recorded", PUBLISHED,
                         ids=[os.path.relpath(p, REPO) for p, _ in PUBLISHED])
def test_a_published_model_evaluates_to_its_recorded_accuracy(path, recorded, test_set):
    images, labels = test_set
    model, _ = unpack(path)
    sample = accuracy(model, images[::SAMPLE], labels[::SAMPLE])
    assert abs(sample - recorded["sample_acc"]) <= 100 * FLIPS / len(labels[::SAMPLE]) + 1e-9
    if path == PUBLISHED[0][0]:  # one file on the whole test set: seconds, not minutes
        assert abs(accuracy(model, images, labels) - recorded["acc"]) <= (
            100 * FLIPS / len(labels) + 1e-9)
