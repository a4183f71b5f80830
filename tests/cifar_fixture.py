"""Tiny, learnable CIFAR-10/100 folders in the official python-version layout."""
import os
import pickle

import numpy as np


def _write(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _split(rng, colours, n, name):
    """n balanced, shuffled samples: each image is its class colour plus Gaussian noise."""
    labels = rng.permutation(np.arange(n) % len(colours))  # (n,)
    noise = rng.normal(0, 40, size=(n, 3, 32, 32))  # (n, 3, 32, 32)
    images = np.clip(colours[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    files = np.array([f"fixture_{name}_{i:05d}.png" for i in range(n)])
    return images.reshape(n, 3 * 32 * 32), labels, files  # data rows: R, G, B planes


def _batch(batch_label, label_key, data, labels, files, **extra):
    return {"batch_label": batch_label, label_key: labels.tolist(), "data": data,
            "filenames": files.tolist(), **extra}


def make_cifar(root, dataset="cifar10", n_train=200, n_test=100, seed=0):
    """Write a tiny CIFAR folder under ``root`` that reads like the official one; returns ``root``.

    Each class has its own mean colour, so a model can learn it quickly.
    """
    root = str(root)
    rng = np.random.default_rng(seed)
    num_classes = 10 if dataset == "cifar10" else 100
    colours = rng.uniform(20, 235, size=(num_classes, 3))  # (classes, 3)
    train, test = _split(rng, colours, n_train, "train"), _split(rng, colours, n_test, "test")
    names = [f"class_{c}" for c in range(num_classes)]
    if dataset == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder, exist_ok=True)
        for i, part in enumerate(np.array_split(np.arange(n_train), 5), 1):
            _write(os.path.join(folder, f"data_batch_{i}"),
                   _batch(f"training batch {i} of 5", "labels", *(a[part] for a in train)))
        _write(os.path.join(folder, "test_batch"), _batch("testing batch 1 of 1", "labels", *test))
        _write(os.path.join(folder, "batches.meta"),
               {"num_cases_per_batch": -(-n_train // 5), "label_names": names, "num_vis": 3072})
    else:
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder, exist_ok=True)
        for name, split in (("train", train), ("test", test)):
            coarse = (split[1] // 5).tolist()
            _write(os.path.join(folder, name),
                   _batch(f"{name} batch 1 of 1", "fine_labels", *split, coarse_labels=coarse))
        coarse_names = [f"superclass_{c}" for c in range(20)]
        _write(os.path.join(folder, "meta"),
               {"fine_label_names": names, "coarse_label_names": coarse_names})
    return root
