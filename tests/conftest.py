"""Shared fixtures; tests under ``tests/e2e`` are marked ``e2e`` (``-m "not e2e"``: unit only)."""
import pathlib

import pytest

from cifar_fixture import make_cifar
from imagenet_fixture import make_imagenet

E2E = pathlib.Path(__file__).parent / "e2e"


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
