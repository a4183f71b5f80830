"""A tiny, learnable ImageNet folder in the ImageFolder layout: small JPEGs of a few classes."""
import os

import numpy as np
from PIL import Image

CLASSES = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331")


def make_imagenet(root, classes=CLASSES, n_train=8, n_val=4, sizes=(40, 72), seed=0):
    """Write ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``: ``n_train`` and
    ``n_val`` images per class, each of a random size within ``sizes`` (so that the crops resize
    them), its class's colour plus noise (so that a model learns it); returns ``root``."""
    root = str(root)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(30, 225, size=(len(classes), 3))  # (classes, 3)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(*sizes, size=2)
                pixels = colours[c] + rng.normal(0, 30, size=(h, w, 3))  # (h, w, 3)
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                image.save(os.path.join(folder, f"{name}_{split}_{i:03d}.JPEG"), quality=90)
    return root
