"""Shared fixtures; tests under ``tests/e2e`` are marked ``e2e`` (``-m "not e2e"``: unit only).

pytest.ini runs the tests in one pytest-xdist worker per core, a file per worker at a time (so a
module's fixtures are built once); each worker, and every script it starts, uses one thread.
"""
import os
import pathlib

import pytest
import torch

from cifar_fixture import make_cifar
from imagenet_fixture import make_imagenet

E2E = pathlib.Path(__file__).parent / "e2e"


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    for item in items:
        if E2E in pathlib.Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    return make_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10")


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory):
    return make_cifar(tmp_path_factory.mktemp("cifar100"), "cifar100")


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory):
    return make_imagenet(tmp_path_factory.mktemp("imagenet"))
