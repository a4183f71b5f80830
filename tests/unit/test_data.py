import math
import os
import pickle
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import utils.data.cifar as data
from utils.data import build_loaders
from utils.data.cifar import MEAN, STD, DataError, DeviceLoader, load_cifar, num_classes
from utils.data.release import release_loaders

from cifar_fixture import make_cifar

LAYOUTS = {  # dataset: (folder, train files, test files, label key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def random_images(n, low=0):
    generator = torch.Generator().manual_seed(n)
    return torch.randint(low, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)


def unnormalize(x):
    """Normalised float (B,3,H,W) -> the uint8 values it was made from; checks they are whole."""
    v = (x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255
    assert (v - v.round()).abs().max() < 1e-3
    return v.round().to(torch.uint8)


def id_images(n):
    """Images whose pixels all encode their index: channel 0 = i % 256, channel 1 = i // 256."""
    ids = torch.arange(n)
    codes = torch.stack([ids % 256, ids // 256, torch.zeros_like(ids)], 1)  # (n, 3)
    return codes[:, :, None, None].expand(n, 3, 32, 32).to(torch.uint8).contiguous(), ids


def epoch_ids(loader):
    return torch.cat([y for _, y in loader])


def crop_matches(sources, outs):
    """Which crops of the 4-pixel zero-padded sources (B,3,32,32) equal each output, the output
    unflipped (index 0) or flipped back (index 1): bool (B, 2, 9, 9) over flip, top, left."""
    crops = F.pad(sources, (4, 4, 4, 4)).unfold(2, 32, 1).unfold(3, 32, 1)  # (B, 3, 9, 9, 32, 32)
    return torch.stack([(crops == o[:, :, None, None]).all(-1).all(-1).all(1)
                        for o in (outs, outs.flip(-1))], 1)


def position_image():
    """Channel 0 holds row + 1, channel 1 column + 1, so a crop reveals its offsets and flip."""
    pos = torch.arange(1, 33, dtype=torch.uint8)
    return torch.stack([pos[:, None].expand(32, 32), pos[None, :].expand(32, 32),
                        torch.full((32, 32), 7, dtype=torch.uint8)])


def decode_crops(x):
    """Normalised augmented position images (B,3,32,32) -> top offsets, left offsets, flips.

    Output pixel (16, 16) shows source pixel (top + 12, left + 12), or column left + 11 if flipped.
    """
    v = unnormalize(x).long()
    flips = v[:, 1, 16, 17] < v[:, 1, 16, 16]
    top = v[:, 0, 16, 16] - 1 - 12
    left = v[:, 1, 16, 16] - 1 - 12 + flips.long()
    return top, left, flips


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_load_cifar_returns_the_bytes_and_labels_on_disk(dataset, request):
    root = request.getfixturevalue(f"{dataset}_root")
    folder, train_files, test_files, key = LAYOUTS[dataset]
    for train, files in ((True, train_files), (False, test_files)):
        batches = []
        for name in files:
            with open(os.path.join(root, folder, name), "rb") as f:
                batches.append(pickle.load(f, encoding="latin1"))
        images, labels = load_cifar(dataset, root, train, download=False)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        expected = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        assert torch.equal(images, torch.from_numpy(expected))
        assert labels.tolist() == sum((b[key] for b in batches), [])


def test_unknown_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cifar10 or cifar100"):
        load_cifar("mnist", tmp_path, True)


def test_missing_data_without_download_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "download_and_extract_archive", pytest.fail)
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", tmp_path, True, download=False)
    msg = str(err.value)
    assert "\n" not in msg and "--data-root" in msg
    assert os.path.join(tmp_path, "cifar-10-batches-py") in msg


def test_missing_data_offline_fails_fast_with_one_line(tmp_path, monkeypatch):
    calls = []

    def offline(url, download_root, md5=None, **kwargs):
        calls.append((url, download_root, md5, socket.getdefaulttimeout()))
        raise OSError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(data, "download_and_extract_archive", offline)
    timeout = socket.getdefaulttimeout()
    with pytest.raises(DataError) as err:
        load_cifar("cifar100", tmp_path, False)
    msg = str(err.value)
    assert "\n" not in msg and os.path.join(tmp_path, "cifar-100-python") in msg
    [(url, download_root, md5, timeout_during)] = calls
    assert url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert md5 == "eb9058c3a382ffc7106e4002c42a8d85" and str(download_root) == str(tmp_path)
    assert timeout_during is not None and timeout_during <= 60
    assert socket.getdefaulttimeout() == timeout


def test_download_fills_a_missing_folder(tmp_path, monkeypatch):
    def fake_download(url, download_root, md5=None, **kwargs):
        assert url.endswith("cifar-10-python.tar.gz") and md5 == "c58f30108f718f92721af3b95e74349a"
        make_cifar(download_root, "cifar10", n_train=20, n_test=10)

    monkeypatch.setattr(data, "download_and_extract_archive", fake_download)
    images, labels = load_cifar("cifar10", tmp_path, True)
    assert images.shape == (20, 3, 32, 32) and labels.shape == (20,)


def test_missing_file_in_existing_folder_is_an_error(cifar10_root, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "download_and_extract_archive", pytest.fail)
    shutil.copytree(cifar10_root, tmp_path, dirs_exist_ok=True)
    path = os.path.join(tmp_path, "cifar-10-batches-py", "data_batch_5")
    os.remove(path)
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", tmp_path, True)
    assert path in str(err.value) and "\n" not in str(err.value)
    assert load_cifar("cifar10", tmp_path, False)[0].shape == (100, 3, 32, 32)


CORRUPTIONS = {
    "no labels": lambda batch: batch.pop("labels"),
    "short rows": lambda batch: batch.update(data=batch["data"][:, :3000]),
    "float data": lambda batch: batch.update(data=batch["data"].astype(np.float32)),
    "label out of range": lambda batch: batch.update(labels=[10] * len(batch["labels"])),
}


@pytest.mark.parametrize("corruption", ["truncated", *CORRUPTIONS])
def test_corrupt_batch_names_the_file(corruption, cifar10_root, tmp_path):
    shutil.copytree(cifar10_root, tmp_path, dirs_exist_ok=True)
    path = os.path.join(tmp_path, "cifar-10-batches-py", "data_batch_3")
    with open(path, "rb") as f:
        raw = f.read()
    if corruption == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        batch = pickle.loads(raw, encoding="latin1")
        CORRUPTIONS[corruption](batch)
        raw = pickle.dumps(batch, protocol=2)
    with open(path, "wb") as f:
        f.write(raw)
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", tmp_path, True, download=False)
    assert path in str(err.value) and "\n" not in str(err.value)


def test_test_split_is_in_order_and_normalised():
    images = random_images(50)
    labels = torch.arange(50).flip(0) % 10
    loader = DeviceLoader(images, labels, 16, "cpu", train=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, labels)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images.float() / 255 - mean) / std)


def test_train_epochs_are_reproducible_permutations():
    images, ids = id_images(300)
    loader = DeviceLoader(images, ids, 64, "cpu", train=True, seed=3)
    loader.set_epoch(0)
    first = [(x, y) for x, y in loader]
    second = epoch_ids(loader)  # iterating advanced to epoch 1
    for x, y in first:  # the crop centre is never padding, so it still shows the image's id
        centre = unnormalize(x)[:, :, 16, 16].long()
        assert torch.equal(centre[:, 0] + 256 * centre[:, 1], y)
    first = torch.cat([y for _, y in first])
    for order in (first, second):
        assert torch.equal(order.sort().values, ids)
    assert not torch.equal(first, second) and not torch.equal(first, ids)
    loader.set_epoch(0)
    assert torch.equal(epoch_ids(loader), first)
    loader.set_epoch(1)
    assert torch.equal(epoch_ids(loader), second)
    other_seed = DeviceLoader(images, ids, 64, "cpu", train=True, seed=4)
    assert not torch.equal(epoch_ids(other_seed), first)


def test_augmentation_is_a_crop_of_the_zero_padded_image():
    images = random_images(256, low=1)
    loader = DeviceLoader(images, torch.arange(256), 100, "cpu", train=True)
    seen = []
    for x, ids in loader:
        matches = crop_matches(images[ids], unnormalize(x))  # (B, 2, 9, 9)
        assert (matches.flatten(1).sum(1) == 1).all()
        seen.append(matches.nonzero()[:, 1:])  # (B, 3): flipped, top, left
    seen = torch.cat(seen)
    assert [set(seen[:, i].tolist()) for i in range(3)] == [{0, 1}, set(range(9)), set(range(9))]


def test_augmentation_statistics_match_the_release_loader():
    n = 4000
    images = position_image().expand(n, 3, 32, 32).contiguous()
    labels = torch.zeros(n, dtype=torch.long)
    device_x = torch.cat([x for x, _ in DeviceLoader(images, labels, 500, "cpu", train=True)])
    torch.manual_seed(0)
    train, _ = release_loaders(images, labels, images[:1], labels[:1], 500, 1, workers=0)
    release_x = torch.cat([x for x, _ in train])
    results = [decode_crops(x) for x in (device_x, release_x)]
    se = math.sqrt(0.25 / n)
    for top, left, flips in results:
        assert abs(flips.float().mean().item() - 0.5) < 4 * se
        joint = torch.bincount(top * 9 + left, minlength=81)
        assert len(joint) == 81 and ((joint - n / 81).abs() < 5 * math.sqrt(n / 81 * 80 / 81)).all()
    (top_a, left_a, flips_a), (top_b, left_b, flips_b) = results
    assert abs(flips_a.float().mean() - flips_b.float().mean()) < 4 * math.sqrt(2) * se
    bound = 5 * math.sqrt(2 * n / 9 * 8 / 9)
    for a, b in ((top_a, top_b), (left_a, left_b)):
        difference = torch.bincount(a, minlength=9) - torch.bincount(b, minlength=9)
        assert (difference.abs() < bound).all()


def literal_release_loaders(root, workers):
    """The release's data path as its scripts state it: torchvision's CIFAR10 (its integrity
    checks off, as for the release's own runs on local copies), its transforms, its loaders."""
    from torchvision import datasets, transforms

    class Local(datasets.CIFAR10):
        def _check_integrity(self):
            return True

        def _load_meta(self):
            self.classes = [f"class_{i}" for i in range(10)]

    normalize = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    train = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                normalize])
    test = transforms.Compose([transforms.ToTensor(), normalize])
    return (torch.utils.data.DataLoader(Local(root, train=True, transform=train), batch_size=48,
                                        shuffle=True, num_workers=workers),
            torch.utils.data.DataLoader(Local(root, train=False, transform=test), batch_size=30,
                                        shuffle=False, num_workers=workers))


def two_epochs(train, test):
    """Every batch of two epochs (each a training pass, then a test pass) and the global torch
    generator's state afterwards."""
    batches = [batch for _ in range(2) for loader in (train, test) for batch in loader]
    return batches, torch.get_rng_state()


@pytest.mark.parametrize("workers", [0, 2])
def test_release_loader_is_the_releases_data_path(cifar10_root, workers):
    """Same seed, same batches (indices, crops, flips, normalisation) over two epochs, and the
    global generator left in the same state, so the draws after them agree too."""
    torch.manual_seed(7)
    expected, expected_state = two_epochs(*literal_release_loaders(cifar10_root, workers))
    torch.manual_seed(7)
    got, state = two_epochs(*build_loaders("cifar10", cifar10_root, 48, 30, "cpu", "release",
                                           workers, seed=99, download=False))
    assert len(got) == len(expected) == 2 * (math.ceil(200 / 48) + math.ceil(100 / 30))
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert torch.equal(state, expected_state)
    assert not torch.equal(expected[0][1], expected[len(expected) // 2][1])  # epochs differ


def test_release_loader_refuses_several_processes(cifar10_root):
    with pytest.raises(DataError, match="--loader device under torchrun"):
        build_loaders("cifar10", cifar10_root, 48, 30, "cpu", "release", 0, rank=0, world_size=2)


@pytest.mark.parametrize("train", [True, False])
def test_ranks_take_disjoint_shards_with_the_same_augmentation(train):
    images = random_images(101)
    ids = torch.arange(101)
    whole = {}
    for x, y in DeviceLoader(images, ids, 16, "cpu", train=train, seed=1):
        whole.update(zip(y.tolist(), x))
    shards = []
    for rank in range(2):
        loader = DeviceLoader(images, ids, 16, "cpu", train=train, seed=1, rank=rank, world_size=2)
        batches = list(loader)
        assert len(loader) == len(batches)
        shards.append(torch.cat([y for _, y in batches]))
        for x, y in batches:
            for out, i in zip(x, y.tolist()):
                assert torch.equal(out, whole[i])
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(torch.cat(shards).sort().values, ids)
    assert [len(s) for s in shards] == [51, 50]


@pytest.mark.parametrize("loader", ["device", "release"])
def test_build_loaders(loader, cifar100_root):
    train, test = build_loaders("cifar100", cifar100_root, 64, 40, "cpu", loader=loader,
                                workers=2, download=False)
    assert max(int(y.max()) for _, y in test) < num_classes("cifar100") == 100
    train.set_epoch(2)
    for split, batch, n in ((train, 64, 200), (test, 40, 100)):
        batches = list(split)
        assert len(split) == len(batches) == math.ceil(n / batch)
        x, y = batches[0]
        assert x.shape == (batch, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert sum(len(y) for _, y in batches) == n


def test_unknown_loader_is_a_data_error(cifar10_root):
    with pytest.raises(DataError, match="--loader"):
        build_loaders("cifar10", cifar10_root, 64, 64, "cpu", loader="dali")


def test_more_workers_than_cores_is_taken_without_torchs_warning(cifar10_root, monkeypatch):
    """-j above the machine's cores (the release's default 4 on 2 cores) runs as asked, quietly."""
    import argparse
    import warnings

    from utils.cli.setup import loaders
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    args = argparse.Namespace(dataset="cifar10", data_root=str(cifar10_root), train_batch=48,
                              test_batch=30, loader="release", workers=2, manualSeed=0,
                              train_crop_size=None, val_resize_size=None, val_crop_size=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, _ = loaders(args, torch.device("cpu"))
        next(iter(train))
    assert train.loader.num_workers == 2
    assert not [w for w in caught if "worker" in str(w.message)]
