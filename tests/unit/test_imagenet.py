"""ImageNet's side: the ImageFolder data (torchvision's transforms, order from the seed and the
epoch), torchvision's networks through the swap, top-5, the recipe, and checkpoints written as
a stream."""
import argparse
import errno
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms as T

from models import Arch, ArchError, build_model, get_arch, load_model_state, model_config
from models import onnx as graph
from models.registry import ARCHS
from utils.data import Crops, DataError, build_loaders, image_shapes, input_shape, num_classes
from utils.data.imagenet import (
    MEAN,
    STD,
    ImageFolderSplit,
    ImageNetLoader,
    classes,
    sample_seed,
    samples,
)
from utils.recipe import IMAGENET_RECIPE, RECIPE, recipe_for
from utils.report.meters import meters
from utils.store import checkpoint as ckpt_io
from utils.store.files import TEMP_PREFIX
from utils.train.engine import evaluate, make_optimizer, make_step

from imagenet_fixture import CLASSES, make_imagenet

SMALL = Crops(32, 36, 32)


def flags(**kw):
    base = {"dataset": "imagenet", "data_root": "", "train_crop_size": None,
            "val_resize_size": None, "val_crop_size": None, "arch": "resnet18", "act": 4}
    return argparse.Namespace(**{**base, **kw})


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v)
                                    for (x, y), (u, v) in zip(a, b))


# -- data --------------------------------------------------------------------------------------
def test_crops_default_to_the_networks_size_and_torchvisions_ratio():
    assert Crops.from_args(flags()) == Crops(224, 256, 224)
    assert Crops.from_args(flags(), 299) == Crops(299, 342, 299)  # Inception-V3's
    assert Crops.from_args(flags(train_crop_size=64, val_crop_size=48)) == Crops(64, 55, 48)
    with pytest.raises(DataError, match="--val-resize-size 40 is smaller"):
        Crops.from_args(flags(val_resize_size=40, val_crop_size=48))


def test_model_config_takes_the_crops_from_the_network_and_the_classes_from_the_folder(
        imagenet_root):
    args = flags(data_root=imagenet_root, arch="inception_v3")
    config = model_config(args)
    assert config["num_classes"] == num_classes("imagenet", imagenet_root) == len(CLASSES)
    assert (args.train_crop_size, args.val_resize_size, args.val_crop_size) == (299, 342, 299)
    assert input_shape(args) == (3, 299, 299)
    args = flags(data_root=imagenet_root, arch="resnet18", train_crop_size=40, val_crop_size=32)
    model_config(args)
    assert image_shapes(args) == [(3, 40, 40), (3, 32, 32)]  # training, then test
    with pytest.raises(DataError, match="--val-crop-size is for -d imagenet"):
        model_config(flags(dataset="cifar10", val_crop_size=32))
    with pytest.raises(ArchError, match="inception_v3 cannot take 3x32x32 images"):
        model_config(flags(data_root=imagenet_root, arch="inception_v3", train_crop_size=32,
                           val_crop_size=32))


@pytest.mark.parametrize("damage,message", [
    ("no root", "no ImageNet folder .*/train: -d imagenet reads"),
    ("no val", "no ImageNet folder .*/val"),
    ("no classes", "holds no class folders"),
    ("foreign val class", "val/n99 is not a class of"),
    ("no images", "val holds no images"),
])
def test_a_malformed_folder_is_one_line_naming_the_layout(tmp_path, damage, message):
    root = tmp_path / "imagenet"
    if damage != "no root":
        (root / "train").mkdir(parents=True)
    if damage not in ("no root", "no val"):
        (root / "val").mkdir()
    if damage not in ("no root", "no val", "no classes"):
        for name in CLASSES[:2]:
            (root / "train" / name).mkdir()
            Image.new("RGB", (8, 8)).save(root / "train" / name / "a.JPEG")
            (root / "val" / name).mkdir()
    if damage == "foreign val class":
        (root / "val" / "n99").mkdir()
    with pytest.raises(DataError, match=message) as e:
        names = classes(str(root))
        samples(str(root), "val", names)
    assert "\n" not in str(e.value)


def test_transforms_are_torchvisions_reference_presets(imagenet_root):
    names = classes(imagenet_root)
    items = samples(imagenet_root, "train", names)
    normalize = [T.PILToTensor(), T.ConvertImageDtype(torch.float32), T.Normalize(MEAN, STD)]
    train = T.Compose([T.RandomResizedCrop(40, antialias=True), T.RandomHorizontalFlip(),
                       *normalize])
    test = T.Compose([T.Resize(46, antialias=True), T.CenterCrop(40), *normalize])
    ours = {split: ImageFolderSplit(items, Crops(40, 46, 40), split, seed=3)
            for split in (True, False)}
    flipped = 0
    for index in range(6):
        image = Image.open(items[index][0]).convert("RGB")
        torch.manual_seed(sample_seed(3, 2, index))
        expected = train(image)
        x, label = ours[True][(index, 2)]
        assert torch.equal(x, expected) and x.shape == (3, 40, 40) and label == items[index][1]
        assert torch.equal(ours[False][(index, 2)][0], test(image))
        flipped += not torch.equal(x, ours[True][(index, 3)][0])  # another epoch, another crop
    assert flipped == 6
    before = torch.get_rng_state()
    ours[True][(0, 0)]
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is untouched


def test_images_are_normalised_with_imagenets_mean_and_std(tmp_path):
    root = make_imagenet(tmp_path, classes=("a",), n_train=1, n_val=1, sizes=(40, 41))
    path = samples(root, "val", ["a"])[0][0]
    pixels = torch.tensor(np.array(Image.open(path).convert("RGB")))  # (40, 40, 3) uint8
    x, _ = ImageFolderSplit([(path, 0)], Crops(40, 40, 40), False)[(0, 0)]
    raw = pixels.permute(2, 0, 1).float() / 255  # (3, 40, 40), the image as it is
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6)


def test_each_epochs_order_comes_from_the_seed_and_the_epoch(imagenet_root):
    items = samples(imagenet_root, "train", classes(imagenet_root))

    def loader(seed=0, workers=0, rank=0, world=1, batch=10):
        return ImageNetLoader(items, SMALL, batch, "cpu", True, seed, workers, rank, world)

    straight = loader()
    epochs = [batches(straight) for _ in range(3)]  # iterating advances the epoch
    assert not same(epochs[0], epochs[1]) and not same(epochs[1], epochs[2])
    resumed = loader()
    resumed.set_epoch(2)  # what --resume does: epoch 2 without epochs 0 and 1
    assert same(batches(resumed), epochs[2])
    before = torch.get_rng_state()
    with_workers = loader(workers=2)
    assert same(batches(with_workers), epochs[0])  # workers change nothing
    assert same(batches(with_workers), epochs[1])  # (persistent between epochs)
    assert torch.equal(torch.get_rng_state(), before)  # nor the global generator's stream
    assert not same(batches(loader(seed=1)), epochs[0])
    labels = torch.cat([y for _, y in epochs[0]])
    assert sorted(labels.tolist()) == sorted(label for _, label in items)
    assert [len(y) for _, y in epochs[0]] == [10, 10, 10, 10, 8]  # the last batch kept
    # Two ranks: DistributedSampler's split of the same permutation, as many steps each.
    shards = [batches(loader(rank=r, world=2, batch=8)) for r in (0, 1)]
    assert [len(s) for s in shards] == [3, 3]
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(0))
    for r, shard in enumerate(shards):
        got = torch.cat([y for _, y in shard])
        assert got.tolist() == [items[i][1] for i in perm[r::2].tolist()]


def test_the_test_split_is_whole_and_in_order_on_every_rank(imagenet_root):
    train, test = build_loaders("imagenet", imagenet_root, 8, 5, "cpu", workers=0,
                                world_size=2, rank=1, crops=SMALL)
    items = samples(imagenet_root, "val", classes(imagenet_root))
    got = batches(test)
    assert torch.cat([y for _, y in got]).tolist() == [label for _, label in items]
    assert same(got, batches(test)) and got[0][0].shape == (5, 3, 32, 32)
    assert len(train) == 3  # 48 images, 24 on this rank


def test_the_release_loader_has_no_imagenet_path(imagenet_root):
    with pytest.raises(DataError, match="--loader release is the release's CIFAR DataLoader"):
        build_loaders("imagenet", imagenet_root, 8, 8, "cpu", loader="release")


def test_a_broken_image_in_a_worker_is_one_line(tmp_path):
    root = make_imagenet(tmp_path, classes=("a", "b"), n_train=2, n_val=1)
    broken = samples(root, "train", ["a", "b"])[1][0]
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    train, _ = build_loaders("imagenet", root, 2, 2, "cpu", workers=1, crops=SMALL)
    with pytest.raises(DataError) as e:
        batches(train)
    assert str(e.value).startswith(f"cannot read image {broken} (")
    assert "\n" not in str(e.value) and str(e.value).endswith("replace or remove it")


# -- networks ----------------------------------------------------------------------------------
def test_torchvisions_names_never_shadow_the_releases_cifar_networks():
    assert get_arch("resnet18") is get_arch("torchvision.resnet18")
    assert get_arch("resnet18").name == "torchvision.resnet18"
    assert get_arch("alexnet") is ARCHS["alexnet"] and get_arch("vgg16_bn") is ARCHS["vgg16_bn"]
    assert get_arch("torchvision.vgg16_bn").name == "torchvision.vgg16_bn"
    assert get_arch("resnet") is ARCHS["resnet"]
    with pytest.raises(ArchError, match="did you mean resnet50?.*torchvision.NAME"):
        get_arch("resnet5O")


def test_a_torchvision_state_dict_loads_and_computes_as_torchvision(tmp_path):
    """act 0: the bit network in float form is torchvision's network, forward for forward."""
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=7).eval()
    ours = build_model("resnet18", num_classes=7, act=0).eval()
    load_model_state(ours, {"state_dict": theirs.state_dict()})
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert {n for n, _ in ours.quant_layers()} == {
        n for n, m in theirs.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and "downsample" not in n}


def test_inception_v3_leaves_its_auxiliary_classifier_out_and_steps(tmp_path):
    torch.manual_seed(0)
    theirs = torchvision.models.inception_v3(num_classes=4, aux_logits=True, init_weights=True,
                                             transform_input=True).eval()
    assert any(k.startswith("AuxLogits.") for k in theirs.state_dict())
    path = tmp_path / "inception.pth"
    torch.save(theirs.state_dict(), path)  # torchvision's weight file: a bare state dict
    ours = build_model("inception_v3", num_classes=4, act=0).eval()
    load_model_state(ours, ckpt_io.load_checkpoint(str(path)))
    x = torch.randn(2, 3, 80, 80)  # the smallest inputs Inception-V3 takes are 75x75
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert not any("AuxLogits" in k for k in ours.state_dict())
    quantized = build_model("inception_v3", num_classes=4, act=4)
    relus = [n for n, m in theirs.named_modules()  # each BasicConv2d calls F.relu once
             if type(m).__name__ == "BasicConv2d" and not n.startswith("AuxLogits")]
    sites = [n for n, m in quantized.named_modules() if type(m).__name__ == "ActQuantizer"]
    assert sites == [f"{n}.act.0" for n in relus[1:]]  # every call site but the stem's
    stepped(quantized, x)


def test_mobilenet_v3_small_quantizes_every_relu_after_its_hardswish_stem():
    """The stem rule takes the first activation of any kind: MobileNetV3's is a Hardswish, which
    stays float, so every ReLU call site gets a quantizer, the first block's included."""
    model = build_model("mobilenet_v3_small", num_classes=3, act=4)
    quantizers = [n for n, m in model.named_modules() if type(m).__name__ == "ActQuantizer"]
    relus = [n for n, m in torchvision.models.mobilenet_v3_small().named_modules()
             if isinstance(m, torch.nn.ReLU)]
    assert "features.1.block.0.2" in relus and quantizers == relus
    stepped(model, torch.randn(4, 3, 32, 32))


def test_mobilenet_v2_is_swapped_with_a_quantizer_per_relu6_but_the_stems_and_steps():
    model = build_model("mobilenet_v2", num_classes=3, act=4)
    quantizers = [n for n, m in model.named_modules() if type(m).__name__ == "ActQuantizer"]
    relu6 = [n for n, m in torchvision.models.mobilenet_v2().named_modules()
             if isinstance(m, torch.nn.ReLU6)]
    assert quantizers == relu6[1:]  # every ReLU6 but the stem's (features.0.2)
    stepped(model, torch.randn(4, 3, 32, 32))


def stepped(model, x):
    """One BSQ step of ``model`` at 1 bit (the cheapest: a step's cost is its plane tensors'
    memory traffic): a finite loss, every plane tensor trained."""
    model.to_bits_(1).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = make_step(model, make_optimizer(model, 0.1, 0.9, 1e-4), decay=1.0)
    stats = step(x, torch.arange(len(x)) % model.arch_spec["num_classes"])
    assert torch.isfinite(stats).all() and stats[2] > 0  # B / TP
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert all(n in moved for n in before if n.endswith(("pweight", "nweight")))


class Handlers(torch.nn.Module):
    """What torchvision's networks add to the ONNX export: Inception-V3's input transform
    (indexing, unsqueeze, cat), max pooling with ceil_mode, adaptive average pooling to a size
    that divides the input (VGG's 7x7), MobileNet-V3's Hardswish / Hardsigmoid, EfficientNet's
    SiLU and Sigmoid."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d((2, 2))
        self.acts = torch.nn.Sequential(torch.nn.Hardswish(), torch.nn.SiLU())
        self.gate = torch.nn.Sequential(torch.nn.Hardsigmoid(), torch.nn.Sigmoid())
        self.fc = torch.nn.Linear(32, num_classes)

    def forward(self, x):
        x = torch.cat([torch.unsqueeze(x[:, 2], 1) * 0.5 + 0.1, x[:, 0:2]], 1)  # (B, 3, 9, 9)
        x = F.max_pool2d(self.acts(self.conv(x)), 3, 2, ceil_mode=True)  # (B, 8, 4, 4)
        x = self.pool(x * self.gate(x))  # (B, 8, 2, 2)
        return self.fc(torch.flatten(F.relu(x), 1))  # (B, num_classes)


def test_onnx_handlers_of_torchvisions_operations(monkeypatch):
    """Every handler computes its operation: ONNX Runtime's logits are the model's within fp32
    summation order (act 0: no per-batch quantizer whose rounding could flip)."""
    monkeypatch.setitem(ARCHS, "handlers", Arch("handlers", lambda num_classes: Handlers()))
    torch.manual_seed(0)
    model = build_model("handlers", num_classes=5, act=0).to_bits_(4).eval()
    proto = graph.build_graph(model, (3, 9, 9))
    assert {"Gather", "Unsqueeze", "Concat", "Slice", "HardSwish", "HardSigmoid", "Sigmoid",
            "AveragePool"} <= {n.op_type for n in proto.graph.node}
    x = torch.randn(4, 3, 9, 9)
    with torch.no_grad():
        ours = model(x)
    theirs = graph.logits(graph.session(proto.SerializeToString()), x)
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-5)


# -- top-5, recipe, checkpoints ------------------------------------------------------------------
def test_evaluate_adds_top5_and_leaves_top1_and_the_loss_as_they_were():
    torch.manual_seed(0)
    logits, y = torch.randn(30, 8), torch.randint(0, 8, (30,))
    net = torch.nn.Linear(8, 8)
    with torch.no_grad():
        net.weight.copy_(torch.eye(8))
        net.bias.zero_()
    loader = [(logits[:16], y[:16]), (logits[16:], y[16:])]
    result = evaluate(net, loader)
    totals = sum(meters(F.cross_entropy(x, t), x, t) for x, t in loader)
    assert (result["loss"], result["acc"]) == (totals[0].item() / 30, totals[1].item() / 30)
    top5 = (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item() * 100
    assert result["acc5"] == pytest.approx(top5)
    assert result["acc5"] >= result["acc"]


def test_the_recipe_is_the_datasets_and_keeps_the_cifar_recipes_rules():
    """ImageNet's recipe is our choice (docs/networks.md): BSQ re-quantizes at each of its lr
    steps; like the CIFAR recipe, it finetunes at a tenth of BSQ's lr with milestones inside the
    run; its global batch splits over the paper's two GPUs; finetuning runs as long as BSQ."""
    assert recipe_for("cifar10") is RECIPE and recipe_for("cifar100") is RECIPE
    assert recipe_for("imagenet") is IMAGENET_RECIPE
    bsq = IMAGENET_RECIPE["bsq"]
    assert tuple(range(bsq.prun_int, bsq.epochs, bsq.prun_int)) == bsq.schedule
    for recipe in (RECIPE, IMAGENET_RECIPE):
        assert recipe["finetune"].lr == pytest.approx(recipe["bsq"].lr / 10)
        assert all(0 < m < stage.epochs for stage in recipe.values() for m in stage.schedule)
    assert IMAGENET_RECIPE["bsq"].batch % 2 == 0
    assert IMAGENET_RECIPE["finetune"].epochs == IMAGENET_RECIPE["bsq"].epochs


def test_sweep_passes_the_imagenet_recipe_and_splits_its_batch(imagenet_root, tmp_path):
    import sweep
    from utils.sweep.launchers import Resources
    args = sweep.get_args_parser().parse_args(
        ["--decays", "0.01", "-a", "resnet18", "-d", "imagenet", "--data-root", imagenet_root,
         "--float-model", "f.pth", "--manualSeed", "1"])
    model_config(args)
    args.train_batch = sweep.train_batch(args, Resources(gpus=2))
    stages, _ = sweep.plan(args, str(tmp_path))
    bsq = next(s for s in stages if s.name == "alpha 0.01 BSQ").flags
    text = " ".join(bsq)
    assert "--epochs 90 --lr 0.1 --schedule 30 60 --gamma 0.1 --wd 0.0001" in text
    assert "--Prun_Int 30" in text and "--train-batch 128" in text
    assert "--train-crop-size 224 --val-resize-size 256 --val-crop-size 224" in text


def test_checkpoints_stream_to_disk_and_a_full_disk_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth.tar"
    ckpt_io.save_checkpoint({"state_dict": {"a": torch.ones(3)}}, str(path))
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as e:
        ckpt_io.save_checkpoint({"state_dict": {"a": torch.zeros(10 ** 6)}}, str(path))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(TEMP_PREFIX)]
    monkeypatch.undo()
    assert torch.equal(ckpt_io.load_checkpoint(str(path))["state_dict"]["a"], torch.ones(3))


def test_non_finite_tensors_are_found_and_huge_finite_ones_are_not(tmp_path):
    path = str(tmp_path / "c.pth.tar")
    huge = torch.full((4,), 3e38)  # finite, but its sum overflows to inf
    ckpt_io.save_checkpoint({"state_dict": {"w": huge}}, path)
    assert torch.equal(ckpt_io.load_checkpoint(path)["state_dict"]["w"], huge)
    for bad in (float("nan"), float("inf")):
        w = torch.zeros(1000)
        w[517] = bad
        ckpt_io.save_checkpoint({"state_dict": {"w": w}}, path)
        with pytest.raises(ckpt_io.CheckpointError, match="non-finite values in w"):
            ckpt_io.load_checkpoint(path)
