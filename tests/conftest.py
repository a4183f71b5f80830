import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]  # repo root (utils, models) and cifar_fixture

from cifar_fixture import make_cifar  # noqa: E402


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    return make_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10")


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory):
    return make_cifar(tmp_path_factory.mktemp("cifar100"), "cifar100")
